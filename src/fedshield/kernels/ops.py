"""Two training operations with a faster CPU path (docs/performance.md, "Kernels").

* :func:`conv2d` — a stride-1, unpadded convolution whose **input gradient** is one matrix product of the
  output gradient with the weights followed by a col2im scatter (``cpu_kernels.c``), done a few images at a
  time so the columns stay in the cache. oneDNN instead runs a forward convolution over the zero-padded output
  gradient: for lenet's conv2 (20 → 50 channels, 5 × 5, 12 × 12 inputs) 230 M multiply-adds where 102 M are
  needed. The forward pass and the weight and bias gradients are PyTorch's (oneDNN), bit for bit.
* :func:`max_pool2_relu` — ``relu(max_pool2d(x, 2))`` with a one-byte window code instead of an int64 index,
  forward and backward bit for bit equal to PyTorch's.

Both take the fast path only for float32 CPU tensors in channels_last memory (what fedshield's trainer uses)
and when the C kernels are available (:func:`fedshield.kernels.build.load`); otherwise they are exactly
``F.conv2d`` and ``torch.relu(torch.max_pool2d(x, 2))``.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .build import load

__all__ = ["conv2d", "max_pool2_relu", "fast_path_available"]

_CL = torch.channels_last
_COLS_BYTES = 1 << 20  # columns computed per chunk: about 1 MiB, so they are still in the cache for col2im


def fast_path_available() -> bool:
    """True when the C kernels are built and loaded (``FEDSHIELD_KERNELS`` not ``torch``)."""
    return load() is not None


def _is_nhwc_f32(x: Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4 and x.is_contiguous(memory_format=_CL)


class _Conv2dGemm(torch.autograd.Function):
    """A stride-1, unpadded convolution whose input gradient is a matrix product plus col2im.

    Forward, weight and bias gradients: oneDNN (PyTorch's own calls, bit for bit). Input gradient:
    grad_out (N·Ho·Wo × Co) @ weight (Co × K·K·Ci), then col2im (``cpu_kernels.c``), a few images at a time so
    the columns stay in the cache.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:  # type: ignore[override]
        n, cin, h, w = x.shape
        cout, _, k, _ = weight.shape
        ctx.has_bias = bias is not None
        ctx.shape = (n, cin, h, w, cout, k)
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        lib = load()
        x, weight = ctx.saved_tensors
        n, cin, h, w, cout, k = ctx.shape
        ho, wo = h - k + 1, w - k + 1
        go = grad_out.contiguous(memory_format=_CL)
        need_x, need_w, need_b = ctx.needs_input_grad
        gx = gw = gb = None
        if need_w or need_b:
            _, gw, gb = torch.ops.aten.convolution_backward(
                go, x, weight, [cout] if ctx.has_bias else None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
                [False, bool(need_w), bool(need_b and ctx.has_bias)])
            gw = gw if need_w else None
            gb = gb if need_b and ctx.has_bias else None
        if need_x:
            wk = weight.detach().permute(0, 2, 3, 1).reshape(cout, k * k * cin)  # (Co, kh, kw, Ci)
            g3 = go.permute(0, 2, 3, 1).reshape(n, ho * wo, cout)  # a view: NHWC rows per image
            out = torch.zeros((n, h, w, cin), dtype=x.dtype)
            per = max(1, _COLS_BYTES // (ho * wo * k * k * cin * 4))
            buf = torch.empty((min(per, n) * ho * wo, k * k * cin), dtype=x.dtype)
            for s in range(0, n, per):
                e = min(n, s + per)
                rows = (e - s) * ho * wo
                torch.mm(g3[s:e].reshape(rows, cout), wk, out=buf[:rows])
                lib.col2im_nhwc(buf.data_ptr(), out[s].data_ptr(), e - s, h, w, cin, k)
            gx = out.permute(0, 3, 1, 2)
        return gx, gw, gb


def conv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``F.conv2d(x, weight, bias)`` (stride 1, no padding, one group, square kernel), with the GEMM + col2im input
    gradient when ``x`` needs a gradient (not for a first layer), ``x`` and ``weight`` are float32 CPU tensors,
    ``x`` is channels_last and the kernels are available; otherwise exactly ``F.conv2d``.
    """
    if (torch.is_grad_enabled() and _is_nhwc_f32(x) and weight.dtype == torch.float32
            and weight.device.type == "cpu" and weight.dim() == 4 and weight.shape[2] == weight.shape[3]
            and weight.shape[1] == x.shape[1] and x.shape[2] >= weight.shape[2] and x.shape[3] >= weight.shape[3]
            and x.requires_grad and load() is not None):
        return _Conv2dGemm.apply(x, weight, bias)
    return F.conv2d(x, weight, bias)


def _pool_forward(x: Tensor) -> tuple[Tensor, Tensor]:
    n, c, h, w = x.shape
    out = torch.empty((n, c, h // 2, w // 2), dtype=x.dtype, memory_format=_CL)
    code = torch.empty((n, c, h // 2, w // 2), dtype=torch.uint8, memory_format=_CL)
    load().pool_relu_fwd(x.data_ptr(), out.data_ptr(), code.data_ptr(), n, h, w, c)
    return out, code


class _MaxPool2ReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        out, code = _pool_forward(x)
        ctx.save_for_backward(code)
        ctx.in_shape = tuple(x.shape)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        (code,) = ctx.saved_tensors
        n, c, h, w = ctx.in_shape
        g = grad_out.contiguous(memory_format=_CL)
        gin = torch.empty((n, c, h, w), dtype=g.dtype, memory_format=_CL)
        load().pool_relu_bwd(g.data_ptr(), code.data_ptr(), gin.data_ptr(), n, h, w, c)
        return gin


def max_pool2_relu(x: Tensor) -> Tensor:
    """``torch.relu(torch.max_pool2d(x, 2))``, bit for bit, with the C kernel for float32 channels_last CPU input."""
    if _is_nhwc_f32(x) and x.shape[2] >= 2 and x.shape[3] >= 2 and load() is not None:
        if torch.is_grad_enabled() and x.requires_grad:
            return _MaxPool2ReLU.apply(x)
        return _pool_forward(x)[0]
    return torch.relu(torch.max_pool2d(x, 2))

