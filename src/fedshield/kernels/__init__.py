"""fedshield's own CPU kernels for the training step's slowest operations (docs/performance.md, "Kernels")."""

from .build import KernelBuildError, kernels_requested, load
from .ops import conv_pool_relu, fast_path_available, max_pool2_relu

__all__ = ["conv_pool_relu", "max_pool2_relu", "fast_path_available", "load", "kernels_requested", "KernelBuildError"]
