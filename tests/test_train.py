import pytest
import torch
import torch.nn.functional as F

from fedshield.attacks import BatchPoisoner, named_trigger
from fedshield.models import build_model, flatten_params, load_flat_params
from fedshield.sim.train import FusedSGD, LocalTrainer, ParallelTrainer, TrainSettings, lr_at_epoch


def test_multistep_schedule_of_dba_attackers():
    s = TrainSettings(lr=0.05, epochs=5, milestones=(0.2, 0.8), gamma=0.1)
    assert [lr_at_epoch(s, e) for e in range(5)] == pytest.approx([0.05, 0.005, 0.005, 0.005, 0.0005])
    s6 = TrainSettings(lr=1.0, epochs=6, milestones=(0.2, 0.8), gamma=0.5)  # 1.2 -> epoch 2, 4.8 -> epoch 5
    assert [lr_at_epoch(s6, e) for e in range(6)] == pytest.approx([1, 1, 0.5, 0.5, 0.5, 0.25])


def test_invalid_settings_name_the_field():
    with pytest.raises(ValueError, match="momentum=1.5"):
        TrainSettings(momentum=1.5)
    with pytest.raises(ValueError, match="milestones"):
        TrainSettings(milestones=(1.5,))


def _data(n=70, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def _plain_loop(global_params, x, y, s, seed):
    """SGD written out the textbook way, with the documented data order."""
    model = build_model("small_cnn")
    load_flat_params(model, global_params)
    opt = torch.optim.SGD(model.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(s.epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), s.batch_size):
            idx = perm[i : i + s.batch_size]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return flatten_params(model) - global_params


def test_local_trainer_equals_plain_loop():
    torch.manual_seed(1)
    g0 = flatten_params(build_model("small_cnn"))
    x, y = _data()
    s = TrainSettings(lr=0.05, momentum=0.9, weight_decay=5e-4, epochs=2, batch_size=16)
    exact = LocalTrainer(lambda: build_model("small_cnn"), channels_last=False, fast_kernels=False)
    upd = exact.train(g0, x, y, s, torch.Generator().manual_seed(7))
    ref = _plain_loop(g0, x, y, s, 7)
    assert torch.equal(upd, ref)
    fast = LocalTrainer(lambda: build_model("small_cnn"), channels_last=True)  # + fedshield's kernels if built
    upd_cl = fast.train(g0, x, y, s, torch.Generator().manual_seed(7))
    assert torch.allclose(upd_cl, ref, rtol=1e-3, atol=1e-5)
    assert upd.abs().sum() > 0


def _textbook_attacker(global_params, x, y, s, seed, poisoner, memory_format):
    """An attacker's loop as usually written (MultiStepLR per epoch, a poisoned copy of each batch), in
    ``memory_format``."""
    model = build_model("lenet").to(memory_format=memory_format)
    load_flat_params(model, global_params)
    opt = torch.optim.SGD(model.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [round(m * s.epochs) for m in s.milestones], s.gamma)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(s.epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), s.batch_size):
            xb, yb = poisoner(x[perm[i : i + s.batch_size]], y[perm[i : i + s.batch_size]])
            opt.zero_grad()
            F.cross_entropy(model(xb.contiguous(memory_format=memory_format)), yb).backward()
            opt.step()
        sched.step()
    return flatten_params(model) - global_params


@pytest.mark.parametrize("channels_last", [False, True])
def test_attacker_training_equals_textbook_loop_bit_for_bit_in_the_same_memory_format(channels_last):
    # Table I's attacker (lenet, MultiStepLR at 0.2E and 0.8E, 20 of each batch stamped and relabelled): the
    # trainer's arithmetic with PyTorch's operations is the textbook loop's, bit for bit, in either memory format.
    # Across formats only the convolutions' rounding differs (benchmarks/table1_round.py measures how far that
    # carries); fedshield's kernels change only rounding too (tests/test_kernels.py).
    torch.manual_seed(3)
    g0 = flatten_params(build_model("lenet"))
    x, y = _data(75)
    s = TrainSettings(lr=0.05, momentum=0.9, weight_decay=5e-4, epochs=5, batch_size=32, milestones=(0.2, 0.8))
    poison = BatchPoisoner(named_trigger("dba").part(1), target=2, per_batch=10)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    upd = LocalTrainer(lambda: build_model("lenet"), channels_last=channels_last, fast_kernels=False).train(
        g0, x, y, s, torch.Generator().manual_seed(5), poison)
    assert torch.equal(upd, _textbook_attacker(g0, x, y, s, 5, poison, fmt))
    wrong_target = BatchPoisoner(named_trigger("dba").part(1), target=3, per_batch=10)
    assert not torch.allclose(upd, _textbook_attacker(g0, x, y, s, 5, wrong_target, fmt), rtol=1e-2)


def test_poisoner_is_applied_to_each_batch():
    torch.manual_seed(1)
    g0 = flatten_params(build_model("small_cnn"))
    x, y = _data(32)
    seen = []

    def spy(xb, yb):
        seen.append(len(xb))
        return xb, torch.zeros_like(yb)

    s = TrainSettings(lr=0.1, momentum=0.0, epochs=2, batch_size=10)
    LocalTrainer(lambda: build_model("small_cnn")).train(g0, x, y, s, torch.Generator().manual_seed(0), spy)
    assert seen == [10, 10, 10, 2] * 2


def test_parallel_trainer_matches_sequential_and_keeps_order():
    torch.manual_seed(2)
    g0 = flatten_params(build_model("small_cnn"))
    s = TrainSettings(lr=0.05, epochs=1, batch_size=16)
    jobs = lambda: [(*_data(40, seed=i), s, torch.Generator().manual_seed(i), None) for i in range(5)]  # noqa: E731
    saved = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' setting, so results are bit-identical
    try:
        seq = ParallelTrainer(lambda: build_model("small_cnn"), workers=1).train_many(g0, jobs())
    finally:
        torch.set_num_threads(saved)
    par_trainer = ParallelTrainer(lambda: build_model("small_cnn"), workers=3)
    par = par_trainer.train_many(g0, jobs())
    par_trainer.close()
    assert torch.get_num_threads() == saved
    for a, b in zip(seq, par):
        assert torch.equal(a, b)
    assert not torch.equal(seq[0], seq[1])


def _sgd_steps(opt_fn, late: bool, momentum: float):
    torch.manual_seed(0)
    params = [torch.randn(s, requires_grad=True) for s in [(5, 3), (7,), (2, 2, 3)]]
    opt = opt_fn(params)
    gen = torch.Generator().manual_seed(1)
    for step in range(6):
        lr = 0.1 if step < 3 else 0.01
        if isinstance(opt, FusedSGD):
            opt.lr = lr
        else:
            opt.param_groups[0]["lr"] = lr
        opt.zero_grad()
        for i, p in enumerate(params):
            g = torch.randn(p.shape, generator=gen)
            if not (late and i == 2 and step < 2):  # the last parameter gets no gradient in the first two steps
                p.grad = g
        opt.step()
    return [p.detach() for p in params]


@pytest.mark.parametrize("momentum", [0.9, 0.0])
def test_fused_sgd_is_torch_fused_sgd_bit_for_bit(momentum):
    """FusedSGD (the trainer's step with the kernels on) against torch.optim.SGD(fused=True), lr changed between
    steps, with weight decay."""
    ours = _sgd_steps(lambda ps: FusedSGD(ps, lr=0.1, momentum=momentum, weight_decay=5e-4), False, momentum)
    ref = _sgd_steps(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=momentum, weight_decay=5e-4, fused=True),
                     False, momentum)
    assert all(torch.equal(a, b) for a, b in zip(ours, ref))


@pytest.mark.parametrize("momentum", [0.9, 0.0])
def test_fused_sgd_skips_a_parameter_without_gradient(momentum):
    """A parameter without a gradient is skipped and its momentum starts at its first gradient, as in torch's
    for-loop SGD (torch's fused SGD raises there); the fused arithmetic rounds differently, hence the tolerance."""
    ours = _sgd_steps(lambda ps: FusedSGD(ps, lr=0.1, momentum=momentum, weight_decay=5e-4), True, momentum)
    ref = _sgd_steps(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=momentum, weight_decay=5e-4), True, momentum)
    start = _sgd_steps(lambda ps: torch.optim.SGD(ps, lr=0.0), True, momentum)
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-7)
    assert not torch.equal(ours[2], start[2])  # the late parameter moved


def test_the_default_memory_format_alone_gives_the_textbook_loop():
    """channels_last=False with fast_kernels left at auto: no kernels, no fused step (they are a channels_last fast
    path; a 1-channel NCHW batch also counts as channels_last, so they would otherwise reach the first layer)."""
    torch.manual_seed(3)
    g0 = flatten_params(build_model("lenet"))
    x, y = _data(75)
    s = TrainSettings(lr=0.05, momentum=0.9, weight_decay=5e-4, epochs=5, batch_size=32, milestones=(0.2, 0.8))
    poison = BatchPoisoner(named_trigger("dba").part(1), target=2, per_batch=10)
    trainer = LocalTrainer(lambda: build_model("lenet"), channels_last=False)
    assert trainer.fast_kernels is False
    upd = trainer.train(g0, x, y, s, torch.Generator().manual_seed(5), poison)
    assert torch.equal(upd, _textbook_attacker(g0, x, y, s, 5, poison, torch.contiguous_format))
