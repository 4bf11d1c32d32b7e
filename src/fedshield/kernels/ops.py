"""Training operations with a faster CPU path (docs/performance.md, "Kernels").

* :func:`conv_pool_relu` — ``relu(max_pool2d(conv2d(x, w, b), 2))`` (stride 1, no padding) whose backward pass
  works from the pooled gradient and the window codes: the input gradient adds g · w[co] to the patch under each
  window's selected element (a quarter of the multiply-adds of the dense route, none of the col2im), and a first
  layer's weight gradient sums the selected patches directly. The forward pass is PyTorch's convolution then
  :func:`max_pool2_relu`, bit for bit; the gradients differ from PyTorch's by float32 rounding.
* :func:`max_pool2_relu` — ``relu(max_pool2d(x, 2))`` with a one-byte window code instead of an int64 index,
  forward and backward bit for bit equal to PyTorch's.

Both take the fast path only for float32 CPU tensors in channels_last memory (what fedshield's trainer uses)
and when the C kernels are available (:func:`fedshield.kernels.build.load`); otherwise they are exactly
PyTorch's ``F.conv2d`` and ``torch.relu(torch.max_pool2d(x, 2))``.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .build import load

__all__ = ["max_pool2_relu", "conv_pool_relu", "fast_path_available"]

_CL = torch.channels_last


def fast_path_available() -> bool:
    """True when the C kernels are built and loaded (``FEDSHIELD_KERNELS`` not ``torch``)."""
    return load() is not None


def _is_nhwc_f32(x: Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4 and x.is_contiguous(memory_format=_CL)


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
    @once_differentiable  # a second derivative through the C kernels raises instead of being silently wrong
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


class _ConvPoolReLU(torch.autograd.Function):
    """relu(max_pool2d(conv2d(x, w, b), 2)): forward as ``F.conv2d`` then :func:`max_pool2_relu` (bit for bit);
    backward from the pooled gradient and the window codes, without the convolution's output kept for it.

    * input gradient (``conv_pool_dgrad``): each pooled output adds g · w[co] to the patch under the window
      element it came from: a quarter of the multiply-adds of the dense route (GEMM of the mostly-zero
      unpooled gradient, then col2im);
    * weight and bias gradients: for a first layer (no input gradient) ``conv_pool_wgrad`` sums the selected
      patches straight from the pooled gradient; otherwise oneDNN's ``convolution_backward`` on the unpooled
      gradient (``pool_relu_bwd``).
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:  # type: ignore[override]
        y = F.conv2d(x, weight, bias).contiguous(memory_format=_CL)
        out, code = _pool_forward(y)
        ctx.save_for_backward(x, weight, code)
        ctx.has_bias = bias is not None
        ctx.conv_shape = tuple(y.shape)
        return out

    @staticmethod
    @once_differentiable  # a second derivative through the C kernels raises instead of being silently wrong
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        lib = load()
        x, weight, code = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        need_b = need_b and ctx.has_bias
        cout, cin, k, _ = weight.shape
        n, _, h, w = x.shape
        g = grad_out.contiguous(memory_format=_CL)
        gx = gw = gb = None
        if (need_w or need_b) and not need_x:  # a first layer: straight from the pooled gradient
            acc = torch.zeros((k * k * cin, cout), dtype=x.dtype)
            bsum = torch.zeros(cout, dtype=x.dtype)
            lib.conv_pool_wgrad(x.data_ptr(), g.data_ptr(), code.data_ptr(), acc.data_ptr(), bsum.data_ptr(),
                                n, h, w, cin, k, cout)
            if need_w:
                gw = torch.empty_like(weight)  # the weight's memory format
                gw.copy_(acc.t().reshape(cout, k, k, cin).permute(0, 3, 1, 2))
            gb = bsum if need_b else None
        elif need_w or need_b:
            _, ch, cw = ctx.conv_shape[1:]
            go = torch.empty(ctx.conv_shape, dtype=g.dtype, memory_format=_CL)
            lib.pool_relu_bwd(g.data_ptr(), code.data_ptr(), go.data_ptr(), n, ch, cw, cout)
            _, gw, gb = torch.ops.aten.convolution_backward(
                go, x, weight, [cout] if ctx.has_bias else None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
                [False, bool(need_w), bool(need_b)])
            gw = gw if need_w else None
            gb = gb if need_b else None
        if need_x:
            wk = weight.detach().permute(0, 2, 3, 1).contiguous()  # (Co, K, K, Ci): a view for channels_last
            gin = torch.zeros((n, h, w, cin), dtype=x.dtype)
            lib.conv_pool_dgrad(g.data_ptr(), code.data_ptr(), wk.data_ptr(), gin.data_ptr(), n, h, w, cin, k, cout)
            gx = gin.permute(0, 3, 1, 2)
        return gx, gw, gb


def conv_pool_relu(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``relu(max_pool2d(F.conv2d(x, weight, bias), 2))`` (stride 1, no padding, square kernel). With gradients on,
    float32 channels_last CPU tensors and the kernels available, the backward pass works from the pooled gradient
    (:class:`_ConvPoolReLU`; the gradients' rounding differs from PyTorch's, the forward is bit for bit the same);
    otherwise exactly :func:`max_pool2_relu` of ``F.conv2d``."""
    if (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad) and _is_nhwc_f32(x)
            and weight.dtype == torch.float32 and weight.device.type == "cpu" and weight.dim() == 4
            and weight.shape[2] == weight.shape[3] and weight.shape[1] == x.shape[1]
            and x.shape[2] >= weight.shape[2] + 1 and x.shape[3] >= weight.shape[3] + 1
            and (bias is None or (bias.dtype == torch.float32 and bias.device.type == "cpu"))
            and load() is not None):
        return _ConvPoolReLU.apply(x, weight, bias)
    return max_pool2_relu(F.conv2d(x, weight, bias))
