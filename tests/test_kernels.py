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
from fedshield.kernels import conv_pool_relu, fast_path_available, load, max_pool2_relu
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


def _hand_block(first_layer):
    """1 image, 3 x 3 input, 2 x 2 kernels, 2 output channels: conv -> 2 x 2, pool -> 1 x 1."""
    x = torch.tensor([[1.0, 2, 3], [4, 5, 9], [7, 8, 6]]).view(1, 1, 3, 3).contiguous(memory_format=CL)
    # channel 0 reads each patch's top-left pixel: conv [[1, 2], [4, 5]], max 5 at window element 3
    # channel 1 is 10 minus the bottom-right pixel: conv [[5, 1], [2, 4]], max 5 at window element 0
    w = torch.tensor([[[[1.0, 0], [0, 0]]], [[[0, 0], [0, -1]]]]).contiguous(memory_format=CL).requires_grad_()
    b = torch.tensor([0.0, 10.0]).requires_grad_()
    x.requires_grad_(not first_layer)
    out = conv_pool_relu(x, w, b)
    assert out.view(2).tolist() == [5.0, 5.0]
    out.backward(torch.tensor([2.0, 3.0]).view(1, 2, 1, 1))
    return x, w, b


@needs_kernels
@pytest.mark.parametrize("first_layer", [True, False])
def test_conv_pool_relu_gradients_known_answer(first_layer):
    x, w, b = _hand_block(first_layer)
    # weight gradient: each channel's output gradient times the patch under its window's maximum
    assert w.grad.view(2, 4).tolist() == [[10.0, 18, 16, 12], [3.0, 6, 12, 15]]
    assert b.grad.tolist() == [2.0, 3.0]
    if first_layer:
        assert x.grad is None
    else:  # input gradient: g * w[co] on the patch that produced each channel's maximum
        assert x.grad.view(3, 3).tolist() == [[0.0, 0, 0], [0, 2 - 3, 0], [0, 0, 0]]


@needs_kernels
def test_conv_pool_relu_passes_no_gradient_where_relu_cuts():
    x = torch.tensor([[1.0, 2, 3], [4, 5, 9], [7, 8, 6]]).view(1, 1, 3, 3).contiguous(memory_format=CL)
    x.requires_grad_()
    w = (-torch.ones(1, 1, 2, 2)).requires_grad_()  # every window negative: relu outputs 0
    out = conv_pool_relu(x, w, None)
    out.backward(torch.ones_like(out))
    assert out.item() == 0 and not x.grad.any() and not w.grad.any()


@needs_kernels
@pytest.mark.parametrize("n,cin,cout,h,w_,k", [(64, 20, 50, 12, 12, 5), (64, 1, 20, 28, 28, 5), (8, 16, 32, 12, 12, 5),
                                              (5, 3, 7, 13, 11, 3), (4, 2, 33, 9, 10, 5), (3, 1, 16, 7, 8, 2),
                                              (2, 32, 6, 9, 9, 5)])  # K*Ci = 160: the input gradient's general path
@pytest.mark.parametrize("first_layer", [True, False])
def test_conv_pool_relu_matches_torch_and_float64(n, cin, cout, h, w_, k, first_layer):
    torch.manual_seed(1)
    x = torch.randn(n, cin, h, w_).contiguous(memory_format=CL).requires_grad_(not first_layer)
    w = (torch.randn(cout, cin, k, k) * 0.3).contiguous(memory_format=CL).requires_grad_()
    b = (torch.randn(cout) * 0.1).requires_grad_()
    hp, wp = (h - k + 1) // 2, (w_ - k + 1) // 2
    g = torch.randn(n, cout, hp, wp)
    y = conv_pool_relu(x, w, b)
    y.backward(g)
    mine = [t.grad.clone() for t in (x, w, b) if t.requires_grad]
    for t in (x, w, b):
        t.grad = None
    ref = torch.relu(F.max_pool2d(F.conv2d(x, w, b), 2))
    ref.backward(g)
    assert torch.equal(y, ref)  # the forward pass: oneDNN's convolution and the exact pool kernel
    assert y.is_contiguous(memory_format=CL)
    torch_grads = [t.grad for t in (x, w, b) if t.requires_grad]
    x64, w64, b64 = (t.detach().double().requires_grad_(t.requires_grad) for t in (x, w, b))
    torch.relu(F.max_pool2d(F.conv2d(x64, w64, b64), 2)).backward(g.double())
    exact = [t.grad for t in (x64, w64, b64) if t.requires_grad]
    for got, theirs, ex in zip(mine, torch_grads, exact):
        assert got.shape == ex.shape  # and each gradient in its tensor's memory format:
        assert all(got.is_contiguous(memory_format=f) == theirs.is_contiguous(memory_format=f)
                   for f in (torch.contiguous_format, CL))
        assert _rel(got, ex) < 1e-5  # float32 rounding only, as PyTorch's own
        assert _rel(theirs, ex) < 1e-5


@needs_kernels
def test_conv_pool_relu_is_plain_torch_without_grad_or_in_nchw():
    torch.manual_seed(2)
    x = torch.randn(2, 3, 10, 10)
    w, b = torch.randn(4, 3, 3, 3).requires_grad_(), torch.randn(4)
    y = conv_pool_relu(x, w, b)  # NCHW input: PyTorch's own operations and autograd
    assert torch.equal(y, torch.relu(F.max_pool2d(F.conv2d(x, w, b), 2))) and "ConvPool" not in type(y.grad_fn).__name__
    xc = x.contiguous(memory_format=CL)
    with torch.no_grad():
        assert torch.equal(conv_pool_relu(xc, w, b), torch.relu(F.max_pool2d(F.conv2d(xc, w, b), 2)))


@needs_kernels
def test_portable_kernels_agree_with_the_vector_ones(tmp_path):
    """conv_pool_wgrad has an AVX-512 body and a portable one, conv_pool_dgrad is left to the compiler's
    vectoriser; build the library without -march=native too and compare both."""
    import ctypes

    from fedshield.kernels import build

    cc = os.environ.get("CC") or "cc"
    lib_path = tmp_path / "portable.so"
    flags = [f for f in build.FLAGS if f != "-march=native"]
    res = subprocess.run([cc, *flags, "-o", str(lib_path), str(build.SOURCE)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    portable = build._declare(ctypes.CDLL(str(lib_path)))
    torch.manual_seed(5)
    for n, cin, h, k, cout in [(16, 1, 28, 5, 20), (3, 3, 11, 3, 7), (2, 2, 9, 5, 33)]:
        x = torch.rand(n, cin, h, h).contiguous(memory_format=CL)
        conv = F.conv2d(x, torch.randn(cout, cin, k, k)).contiguous(memory_format=CL)
        hp = (h - k + 1) // 2
        out = torch.empty(n, cout, hp, hp).contiguous(memory_format=CL)
        code = torch.empty(n, cout, hp, hp, dtype=torch.uint8).contiguous(memory_format=CL)
        load().pool_relu_fwd(conv.data_ptr(), out.data_ptr(), code.data_ptr(), n, h - k + 1, h - k + 1, cout)
        g = torch.randn(n, cout, hp, hp).contiguous(memory_format=CL)
        results = []
        for lib in (load(), portable):
            acc, gb = torch.zeros(k * k * cin, cout), torch.zeros(cout)
            lib.conv_pool_wgrad(x.data_ptr(), g.data_ptr(), code.data_ptr(), acc.data_ptr(), gb.data_ptr(),
                                n, h, h, cin, k, cout)
            results.append((acc, gb))
        assert _rel(results[0][0], results[1][0]) < 1e-5 and _rel(results[0][1], results[1][1]) < 1e-5
        wk = torch.randn(cout, k, k, cin)  # (Co, K, K, Ci), as the op passes it
        gins = []
        for lib in (load(), portable):
            gin = torch.zeros(n, h, h, cin)
            lib.conv_pool_dgrad(g.data_ptr(), code.data_ptr(), wk.data_ptr(), gin.data_ptr(), n, h, h, cin, k, cout)
            gins.append(gin)
        assert gins[0].abs().sum() > 0 and _rel(gins[0], gins[1]) < 1e-5


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
    with torch.no_grad():  # the evaluation batch size changes the logits by float rounding at most
        xc = x.contiguous(memory_format=CL)
        for bs in (7, 64, 256):
            logits = torch.cat([m(xc[s : s + bs]) for s in range(0, 300, bs)])
            assert torch.allclose(logits, fast, rtol=0, atol=1e-6) and torch.equal(logits.argmax(1), fast.argmax(1))


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


@needs_kernels
def test_a_second_derivative_through_the_kernels_is_refused():
    x = torch.randn(2, 3, 10, 10).contiguous(memory_format=CL).requires_grad_()
    w = torch.randn(4, 3, 3, 3).contiguous(memory_format=CL).requires_grad_()
    (gx,) = torch.autograd.grad(conv_pool_relu(x, w).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|differentiable"):
        gx.sum().backward()
