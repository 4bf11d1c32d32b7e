import pytest
import torch

from fedshield.models import ParamLayout, build_model, count_parameters, flatten_params, load_flat_params


def test_lenet_parameter_count_matches_flame_and_fedward():
    # conv1 20*1*25+20 = 520, conv2 50*20*25+50 = 25,050, fc1 800*500+500 = 400,500, fc2 500*10+10 = 5,010
    model = build_model("lenet")
    assert count_parameters(model) == 520 + 25_050 + 400_500 + 5_010 == 431_080
    assert ParamLayout.from_module(model).dim == 431_080


def test_small_cnn_parameter_count():
    # conv 1->16 k5: 416, conv 16->32 k5: 12,832, fc 512->10: 5,130
    assert count_parameters(build_model("small_cnn")) == 18_378


def test_layout_offsets_and_roundtrip():
    model = build_model("small_cnn")
    layout = ParamLayout.from_module(model)
    assert layout.names == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc.weight", "fc.bias"]
    assert layout["conv1.bias"].offset == 400 and layout["conv1.bias"].shape == (16,)
    flat = torch.arange(layout.dim, dtype=torch.float32)
    load_flat_params(model, flat, layout)
    assert torch.equal(model.conv2.bias.detach(), torch.arange(416 + 12_800, 416 + 12_832, dtype=torch.float32))
    assert torch.equal(flatten_params(model, layout), flat)
    assert torch.equal(layout.view(flat, "fc.weight"), flat[layout["fc.weight"].slice].reshape(10, 512))
    with pytest.raises(ValueError, match="shape"):
        load_flat_params(model, flat[:-1], layout)


def test_batchnorm_statistics_are_buffers_outside_trainable_mask():
    model = build_model("resnet_light", in_channels=3, image_size=32)
    layout = ParamLayout.from_module(model)
    kinds = {e.name: e.kind for e in layout}
    assert kinds["stem.1.running_mean"] == "buffer" and kinds["stem.1.weight"] == "weight"
    assert not any(name.endswith("num_batches_tracked") for name in kinds)  # integer buffers are not aggregated
    mask = layout.trainable_mask()
    assert int(mask.sum()) == count_parameters(model)
    assert not mask[layout["stem.1.running_var"].slice].any()


def test_lenet_pool_before_relu_equals_the_textbook_order():
    torch.manual_seed(0)
    model = build_model("lenet")
    x = torch.randn(8, 1, 28, 28)
    h = torch.max_pool2d(torch.relu(model.conv1(x)), 2)
    h = torch.max_pool2d(torch.relu(model.conv2(h)), 2)
    ref = model.fc2(torch.relu(model.fc1(torch.flatten(h, 1))))
    assert torch.equal(model(x), ref)


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        build_model("vgg")
