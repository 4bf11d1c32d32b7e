"""fedshield's C kernels (src/fedshield/kernels): exact where they claim to be, rounding-close where not,
and a clean fallback to PyTorch's operations."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from fedshield.attacks import BatchPoisoner, named_trigger
from fedshield.kernels import conv2d, fast_path_available, load, max_pool2_relu
from fedshield.models import build_model, flatten_params
from fedshield.sim.evaluate import accuracy
from fedshield.sim.train import LocalTrainer, TrainSettings

CL = torch.channels_last
needs_kernels = pytest.mark.skipif(not fast_path_available(), reason="no C compiler: the kernels cannot be built")


def _same_bits(a, b):
    return torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0)) and torch.equal(torch.signbit(a), torch.signbit(b))


def _rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


@needs_kernels
def test_col2im_known_answer():
    # 1 image, 3x3, 1 channel, K = 2: every column entry 1 -> each pixel counts the windows covering it.
    cols = torch.ones(1 * 2 * 2, 2 * 2 * 1)
    out = torch.zeros(1, 3, 3, 1)
    load().col2im_nhwc(cols.data_ptr(), out.data_ptr(), 1, 3, 3, 1, 2)
    assert out.view(3, 3).tolist() == [[1, 2, 1], [2, 4, 2], [1, 2, 1]]
    # distinct values: window (oh, ow), tap (kh, kw) lands on pixel (oh + kh, ow + kw)
    cols = torch.arange(16, dtype=torch.float32).view(4, 4)  # rows (oh, ow), columns (kh, kw)
    out.zero_()
    load().col2im_nhwc(cols.data_ptr(), out.data_ptr(), 1, 3, 3, 1, 2)
    expect = torch.zeros(3, 3)
    for oh in range(2):
        for ow in range(2):
            for kh in range(2):
                for kw in range(2):
                    expect[oh + kh, ow + kw] += cols[oh * 2 + ow, kh * 2 + kw]
    assert torch.equal(out.view(3, 3), expect)
    assert out[0, 1, 1, 0] == 0 + 5 + 10 + 15  # the centre: one tap from each window


@needs_kernels
@pytest.mark.parametrize("shape", [(64, 20, 24, 24), (3, 5, 7, 9), (4, 50, 8, 8), (2, 16, 6, 6), (2, 33, 5, 4)])
def test_pool_relu_is_torch_bit_for_bit_with_ties_nan_and_negative_zero(shape):
    torch.manual_seed(0)
    x = torch.round(torch.randn(shape) * 2) / 2  # many exact ties inside the windows
    x.view(-1)[::97] = 0.0
    x.view(-1)[::101] = -0.0
    x.view(-1)[5::1009] = float("nan")
    x = x.contiguous(memory_format=CL)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = torch.relu(torch.max_pool2d(a, 2)), max_pool2_relu(b)
    assert yb.is_contiguous(memory_format=CL) and yb.shape == ya.shape
    g = torch.randn(ya.shape).contiguous(memory_format=CL)
    ya.backward(g)
    yb.backward(g)
    assert _same_bits(ya, yb)
    assert _same_bits(a.grad, b.grad)  # the first maximum of a window gets the gradient, as in max_pool2d
    with torch.no_grad():
        assert _same_bits(max_pool2_relu(x), ya.detach())


def test_pool_relu_falls_back_for_other_layouts_and_dtypes():
    x = torch.randn(2, 3, 6, 6)  # NCHW with C > 1: not channels_last
    assert torch.equal(max_pool2_relu(x), torch.relu(torch.max_pool2d(x, 2)))
    xd = torch.randn(2, 3, 6, 6, dtype=torch.float64).contiguous(memory_format=CL)
    assert torch.equal(max_pool2_relu(xd), torch.relu(torch.max_pool2d(xd, 2)))


@needs_kernels
@pytest.mark.parametrize("n,cin,cout,h,w_,k", [(64, 20, 50, 12, 12, 5), (3, 4, 7, 9, 9, 3), (13, 2, 5, 6, 6, 1),
                                              (1, 3, 2, 4, 4, 4), (2, 3, 4, 7, 10, 3)])
def test_conv2d_forward_and_weight_grads_exact_input_grad_to_rounding(n, cin, cout, h, w_, k):
    torch.manual_seed(1)
    x = torch.randn(n, cin, h, w_).contiguous(memory_format=CL).requires_grad_()
    w = torch.randn(cout, cin, k, k).contiguous(memory_format=CL).requires_grad_()
    b = torch.randn(cout).requires_grad_()
    g = torch.randn(n, cout, h - k + 1, w_ - k + 1).contiguous(memory_format=CL)
    y = conv2d(x, w, b)
    y.backward(g)
    mine = [t.grad.clone() for t in (x, w, b)]
    for t in (x, w, b):
        t.grad = None
    ref = F.conv2d(x, w, b)
    ref.backward(g)
    assert torch.equal(y, ref)
    assert torch.equal(mine[1], w.grad) and torch.equal(mine[2], b.grad)  # oneDNN's own weight/bias gradient
    assert _rel(mine[0], x.grad) < 1e-5  # the input gradient: GEMM + col2im, another summation order
    # ... and it is the exact input gradient, not just close to oneDNN's: against float64
    x64, w64 = x.detach().double().requires_grad_(), w.detach().double()
    F.conv2d(x64, w64).backward(g.double())
    assert _rel(mine[0], x64.grad) < 1e-5
    assert mine[0].is_contiguous(memory_format=CL)


def test_conv2d_uses_torch_for_the_first_layer_and_without_grad():
    torch.manual_seed(2)
    x = torch.randn(2, 1, 8, 8).contiguous(memory_format=CL)  # needs no gradient: plain F.conv2d
    w, b = torch.randn(4, 1, 3, 3).requires_grad_(), torch.randn(4)
    y = conv2d(x, w, b)
    assert y.grad_fn is not None and "Convolution" in type(y.grad_fn).__name__
    with torch.no_grad():
        assert torch.equal(conv2d(x.requires_grad_(), w, b), F.conv2d(x, w, b))


def _attacker_update(fast_kernels):
    torch.manual_seed(3)
    g0 = flatten_params(build_model("lenet"))
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(75, 1, 28, 28, generator=gen), torch.randint(0, 10, (75,), generator=gen)
    s = TrainSettings(lr=0.05, momentum=0.9, weight_decay=5e-4, epochs=3, batch_size=32, milestones=(0.2, 0.8))
    poison = BatchPoisoner(named_trigger("dba").part(1), target=2, per_batch=10)
    t = LocalTrainer(lambda: build_model("lenet"), fast_kernels=fast_kernels)
    assert t.fast_kernels is fast_kernels and t.model.fast_kernels is fast_kernels
    return t.train(g0, x, y, s, torch.Generator().manual_seed(5), poison)


@needs_kernels
def test_trainer_with_kernels_differs_from_torch_ops_only_by_rounding():
    fast, ref = _attacker_update(True), _attacker_update(False)
    assert not torch.equal(fast, ref)  # the kernels and the fused SGD step are in use
    assert _rel(fast, ref) < 1e-4  # 9 steps of an attacker: float32 rounding only


@needs_kernels
def test_evaluation_with_the_pool_kernel_gives_the_same_predictions():
    torch.manual_seed(4)
    m = build_model("lenet").to(memory_format=CL)
    x, y = torch.rand(300, 1, 28, 28), torch.randint(0, 10, (300,))
    with torch.no_grad():
        m.fast_kernels = False
        ref = m(x.contiguous(memory_format=CL))
        m.fast_kernels = True
        fast = m(x.contiguous(memory_format=CL))
    assert torch.equal(ref, fast)
    assert accuracy(m, x, y, 128) == float((ref.argmax(1) == y).double().mean())


def _run_python(code, **env):
    full_env = {**os.environ, **env, "PYTHONPATH": os.path.join(os.path.dirname(__file__), "..", "src")}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=full_env, timeout=300)


_PROBE = """
    import warnings
    warnings.simplefilter("always")
    from fedshield.kernels import KernelBuildError, fast_path_available
    from fedshield.models import build_model
    from fedshield.sim.train import LocalTrainer
    with warnings.catch_warnings(record=True) as w:
        t = LocalTrainer(lambda: build_model("lenet"))
    print(fast_path_available(), t.fast_kernels, t.model.fast_kernels,
          any("C kernels are unavailable" in str(x.message) for x in w))
    try:
        LocalTrainer(lambda: build_model("lenet"), fast_kernels=True)
    except KernelBuildError as e:
        print("refused:", e)
"""


@pytest.mark.parametrize("case", ["turned off", "no compiler"])
def test_without_kernels_the_trainer_uses_torch_ops_and_refuses_to_insist(tmp_path, case):
    if case == "turned off":  # FEDSHIELD_KERNELS=torch: silently PyTorch's operations
        env, warned, reason = {"FEDSHIELD_KERNELS": "torch"}, "False", "FEDSHIELD_KERNELS"
    else:  # a compiler that does not exist: one warning, then PyTorch's operations
        env, warned, reason = {"CC": str(tmp_path / "no-such-cc")}, "True", "no-such-cc"
    res = _run_python(_PROBE, FEDSHIELD_KERNEL_CACHE=str(tmp_path / "cache"), **env)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["False", "False", "False", warned]
    assert lines[1].startswith("refused:") and reason in lines[1]


def test_a_compiler_error_is_reported(tmp_path):
    cc = tmp_path / "cc"
    cc.write_text("#!/bin/sh\nif [ \"$1\" = --version ]; then echo fake 1.0; exit 0; fi\necho 'error: boom' >&2\nexit 1\n")
    cc.chmod(0o755)
    res = _run_python("""
        from fedshield.kernels import load, KernelBuildError
        try:
            load(strict=True)
        except KernelBuildError as e:
            print("refused:", e)
    """, CC=str(cc), FEDSHIELD_KERNEL_CACHE=str(tmp_path / "cache"))
    assert res.returncode == 0, res.stderr
    assert "refused:" in res.stdout and "boom" in res.stdout
    assert not any(p.suffix == ".so" for p in (tmp_path / "cache").iterdir())  # no half-written library left


@needs_kernels
def test_a_hooked_convolution_is_called_as_a_module():
    m = build_model("lenet").to(memory_format=CL)
    m.fast_kernels = True
    seen = []
    handle = m.conv2.register_forward_hook(lambda mod, args, out: seen.append(out.shape))
    x = torch.rand(4, 1, 28, 28).contiguous(memory_format=CL)
    m(x).sum().backward()
    handle.remove()
    assert seen == [torch.Size([4, 50, 8, 8])]
