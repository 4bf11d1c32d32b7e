import pytest
import torch

from fedshield.attacks import BatchPoisoner, Trigger, named_trigger


def test_dba_pattern_is_four_bars_of_the_authors_config():
    t = named_trigger("dba")
    assert t.num_parts == 4
    assert t.parts[0] == ((0, 0), (0, 1), (0, 2), (0, 3))
    assert t.parts[1] == ((0, 6), (0, 7), (0, 8), (0, 9))
    assert t.parts[2] == ((3, 0), (3, 1), (3, 2), (3, 3))
    assert t.parts[3] == ((3, 6), (3, 7), (3, 8), (3, 9))
    assert len(t.pixels) == 16 and set(t.pixels) == {p for part in t.parts for p in part}
    assert t.part(5).pixels == t.parts[1]  # modulo the number of parts


def test_apply_sets_every_channel_and_leaves_input_untouched():
    x = torch.zeros(2, 3, 32, 32)
    out = named_trigger("dba_cifar").apply(x)
    assert x.sum() == 0
    assert out[:, :, 0, 0:6].eq(1).all() and out[:, :, 4, 9:15].eq(1).all()
    assert out.sum() == 2 * 3 * 24  # 4 bars of 6 pixels, 3 channels, 2 images


def test_square_trigger_and_custom_value():
    t = named_trigger("square", value=0.5)
    out = t.apply(torch.zeros(1, 1, 28, 28))
    assert out[0, 0, 23:28, 23:28].eq(0.5).all() and out.sum() == 25 * 0.5


def test_pixel_outside_image_is_an_error():
    with pytest.raises(ValueError, match=r"\(30, 1\) lies outside a 28×28 image"):
        Trigger(((30, 1),)).apply(torch.zeros(1, 1, 28, 28))


def test_batch_poisoner_poisons_exactly_the_first_k_samples():
    x = torch.zeros(6, 1, 28, 28)
    y = torch.tensor([0, 1, 3, 4, 5, 6])
    p = BatchPoisoner(named_trigger("dba").part(2), target=2, per_batch=4)
    px, py = p(x, y)
    assert py.tolist() == [2, 2, 2, 2, 5, 6]
    assert px[:4, 0, 3, 0:4].eq(1).all() and px[:4].sum() == 4 * 4
    assert px[4:].sum() == 0
    assert x.sum() == 0 and y.tolist() == [0, 1, 3, 4, 5, 6]  # inputs untouched
    small_x, small_y = p(x[:2], y[:2])  # a short last batch is poisoned whole
    assert small_y.tolist() == [2, 2]
