"""Model architectures by name, and the flat-parameter layout that defenses work on.

Every model is a plain ``nn.Module``. Defenses never see modules: they see one flat vector per client whose
order is fixed by :class:`ParamLayout` (the module's ``state_dict`` order, floating-point tensors only).
Batch-norm running statistics travel in the same vector but are marked ``kind == "buffer"`` so that
defenses can exclude them from distances, norms and noise (docs/defenses.md, Conventions.3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from .core.errors import ConfigError
from .core.registry import Registry
from .kernels import conv_pool_relu as kernel_conv_pool_relu
from .kernels import max_pool2_relu

__all__ = [
    "LayoutEntry",
    "ParamLayout",
    "MODELS",
    "TRAFFIC_MODELS",
    "FlowMLP",
    "FlowAutoencoder",
    "FlowGRU",
    "build_model",
    "count_parameters",
    "flatten_params",
    "load_flat_params",
]


@dataclass(frozen=True)
class LayoutEntry:
    """One tensor of the flat vector: its state-dict name, shape, and position."""

    name: str
    shape: tuple[int, ...]
    offset: int
    numel: int
    kind: str  # "weight", "bias" or "buffer"

    @property
    def slice(self) -> slice:
        return slice(self.offset, self.offset + self.numel)


class ParamLayout:
    """Names, shapes and slices of a model's flat parameter vector.

    The vector holds every floating-point tensor of ``state_dict()`` in order. Integer buffers such as
    ``num_batches_tracked`` are not part of it (they are not aggregated).
    """

    def __init__(self, entries: tuple[LayoutEntry, ...]):
        self.entries = entries
        self.dim = sum(e.numel for e in entries)
        self._by_name = {e.name: e for e in entries}

    @classmethod
    def from_module(cls, module: nn.Module) -> "ParamLayout":
        param_names = {n for n, _ in module.named_parameters()}
        entries = []
        offset = 0
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            if name in param_names:
                kind = "bias" if name.endswith("bias") else "weight"
            else:
                kind = "buffer"
            entries.append(LayoutEntry(name, tuple(t.shape), offset, t.numel(), kind))
            offset += t.numel()
        return cls(tuple(entries))

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self):
        return iter(self.entries)

    def __getitem__(self, name: str) -> LayoutEntry:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no tensor named {name!r} in layout; names: {list(self._by_name)}") from None

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def trainable_mask(self, device: torch.device | str | None = None) -> Tensor:
        """Bool mask (d,) that is True on weights and biases, False on buffers (BN statistics)."""
        mask = torch.ones(self.dim, dtype=torch.bool, device=device)
        for e in self.entries:
            if e.kind == "buffer":
                mask[e.slice] = False
        return mask

    @property
    def has_buffers(self) -> bool:
        return any(e.kind == "buffer" for e in self.entries)

    def trainable_entries(self) -> list[LayoutEntry]:
        return [e for e in self.entries if e.kind != "buffer"]

    def view(self, flat: Tensor, name: str) -> Tensor:
        """The tensor ``name`` of a flat vector (or of each row of an (n, d) matrix), with its shape."""
        e = self[name]
        return flat[..., e.slice].reshape(*flat.shape[:-1], *e.shape)

    def split(self, flat: Tensor) -> dict[str, Tensor]:
        return {e.name: self.view(flat, e.name) for e in self.entries}


def flatten_params(module: nn.Module, layout: ParamLayout | None = None) -> Tensor:
    """The module's floating-point state as one flat float32 vector (a copy), in layout order."""
    layout = layout or ParamLayout.from_module(module)
    sd = module.state_dict()
    return torch.cat([sd[e.name].detach().reshape(-1).float() for e in layout.entries])


@torch.no_grad()
def load_flat_params(module: nn.Module, flat: Tensor, layout: ParamLayout | None = None) -> None:
    """Write a flat vector back into the module's tensors (in place)."""
    layout = layout or ParamLayout.from_module(module)
    if flat.shape != (layout.dim,):
        raise ValueError(f"flat parameter vector has shape {tuple(flat.shape)}, model needs ({layout.dim},)")
    sd = module.state_dict()
    for e in layout.entries:
        sd[e.name].copy_(flat[e.slice].view(e.shape))


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# --------------------------------------------------------------------------------------------- models


class ImageModel(nn.Module):
    """Base of the image models: an optional fixed input standardisation ``(x − mean) / std`` per channel.

    The statistics are plain attributes, not parameters or buffers: they are part of the architecture, never
    aggregated or attacked, and triggers stay in pixel space ([0, 1]) because they are stamped before it.
    """

    input_mean: Optional[Tensor] = None
    input_std: Optional[Tensor] = None
    # fedshield's trainer and evaluator set this (fedshield.kernels): relu(max_pool) as one C kernel and each
    # conv-pool-relu block's backward pass from the pooled gradient. False: PyTorch's operations only (a plain model).
    fast_kernels: bool = False

    def pool_relu(self, x: Tensor) -> Tensor:
        """relu(max_pool2d(x, 2)): equal to maxpool(relu(x)) (both monotone) with the same gradients, on 4× fewer values."""
        return max_pool2_relu(x) if self.fast_kernels else torch.relu(torch.max_pool2d(x, 2))

    def conv_pool_relu(self, layer: nn.Conv2d, x: Tensor) -> Tensor:
        """``pool_relu(layer(x))``. With ``fast_kernels`` and a plain layer (stride 1, no padding, no hooks: a hooked
        layer is always called as a module, so its hooks run) the backward pass works from the pooled gradient
        (:func:`fedshield.kernels.conv_pool_relu`)."""
        if self.fast_kernels and self._plain_conv(layer):
            return kernel_conv_pool_relu(x, layer.weight, layer.bias)
        return self.pool_relu(layer(x))

    @staticmethod
    def _plain_conv(layer: nn.Conv2d) -> bool:
        return (layer.stride == (1, 1) and layer.padding == (0, 0) and layer.dilation == (1, 1) and layer.groups == 1
                and layer.padding_mode == "zeros"
                and not (layer._forward_hooks or layer._forward_pre_hooks or layer._backward_hooks
                         or layer._backward_pre_hooks))

    def set_input_normalization(self, mean: Sequence[float], std: Sequence[float]) -> None:
        m = torch.as_tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        s = torch.as_tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
        if (s <= 0).any():
            raise ValueError(f"input std must be positive, got {list(std)}")
        self.input_mean, self.input_std = m, s

    def normalize_input(self, x: Tensor) -> Tensor:
        if self.input_mean is None:
            return x
        return (x - self.input_mean.to(x.device)) / self.input_std.to(x.device)


class LeNet(ImageModel):
    """FLAME's MNIST CNN and Fedward's ``MnistNet``: conv(1→20,k5)-pool-conv(20→50,k5)-pool-fc(800→500)-fc(500→10).

    431,080 parameters for 28×28 single-channel inputs. Returns logits (Fedward's code applies log_softmax
    and NLL, which equals cross-entropy on logits).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        side = ((image_size - 4) // 2 - 4) // 2
        self.fc1 = nn.Linear(50 * side * side, 500)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_pool_relu(self.conv1, self.normalize_input(x))
        x = self.conv_pool_relu(self.conv2, x)
        x = torch.flatten(x, 1)
        return self.fc2(torch.relu(self.fc1(x)))


class SmallCNN(ImageModel):
    """A quick CNN for tests: conv(→16,k5)-pool-conv(16→32,k5)-pool-fc(→classes); 18,378 parameters on 28×28."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 5)
        self.conv2 = nn.Conv2d(16, 32, 5)
        side = ((image_size - 4) // 2 - 4) // 2
        self.fc = nn.Linear(32 * side * side, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_pool_relu(self.conv1, self.normalize_input(x))
        x = self.conv_pool_relu(self.conv2, x)
        return self.fc(torch.flatten(x, 1))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNetLight(ImageModel):
    """A light ResNet for CIFAR-10 (stem 32 channels, three stages of one basic block: 32, 64, 128).

    In the spirit of the "lightweight ResNet-18" of Bagdasaryan et al. (0.27M parameters as they state);
    this one has 308,650 trainable parameters with batch norm, whose running statistics the layout marks as buffers.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, image_size: int = 32):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.layer1 = _BasicBlock(32, 32, 1)
        self.layer2 = _BasicBlock(32, 64, 2)
        self.layer3 = _BasicBlock(64, 128, 2)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(self.normalize_input(x)))))
        x = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


# ------------------------------------------------------------------------------------ flow-feature models


class FlowMLP(nn.Module):
    """Classifier of preprocessed flow features: F → 64 → 32 → classes, ReLU (the traffic default)."""

    def __init__(self, num_features: int, num_classes: int = 2, hidden: Sequence[int] = (64, 32)):
        super().__init__()
        layers: list[nn.Module] = []
        width = num_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class FlowAutoencoder(nn.Module):
    """Anomaly detector of N-BaIoT (Meidan et al., IEEE Pervasive Computing 2018, §"Training an anomaly detector").

    A deep autoencoder with hidden sizes 75 %, 50 %, 33 % and 25 % of the input dimension (encoder; the decoder
    mirrors it), trained to reconstruct BENIGN traffic only: :meth:`training_loss` is the mean squared
    reconstruction error of the batch's rows labelled benign (label 0), so attack rows in a client's data do not
    train it (and flows an attacker labels benign do). A flow is called an attack when its reconstruction
    error exceeds the threshold tr* = mean + std of the errors on held-out benign data (the paper's rule),
    set by :meth:`calibrate`. ``forward`` returns two logits ``(-s, s)`` with s = (error − tr*) / tr*, so
    ``argmax`` is 1 (attack) exactly when error > tr*: every evaluation and defense that reads logits works
    unchanged. The threshold is an attribute, not a parameter: it is not aggregated.
    """

    def __init__(self, num_features: int, num_classes: int = 2):
        super().__init__()
        if num_classes != 2:
            raise ValueError(f"the autoencoder detector is binary (benign / attack); got num_classes={num_classes}")
        sizes = [num_features] + [max(1, int(round(num_features * r))) for r in (0.75, 0.5, 0.33, 0.25)]
        enc: list[nn.Module] = []
        dec: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            enc += [nn.Linear(a, b), nn.Tanh()]
        rev = sizes[::-1]
        for i, (a, b) in enumerate(zip(rev[:-1], rev[1:])):
            dec += [nn.Linear(a, b)] + ([nn.Tanh()] if i < len(rev) - 2 else [])
        self.encoder, self.decoder = nn.Sequential(*enc), nn.Sequential(*dec)
        self.threshold: Optional[float] = None

    def reconstruction_error(self, x: Tensor) -> Tensor:
        """(N,) mean squared reconstruction error of each row."""
        return (self.decoder(self.encoder(x)) - x).pow(2).mean(dim=1)

    def training_loss(self, x: Tensor, y: Tensor) -> Tensor:
        benign = (y == 0).to(x.dtype)
        err = self.reconstruction_error(x)
        return (err * benign).sum() / benign.sum().clamp_min(1.0)

    @torch.no_grad()
    def calibrate(self, benign_x: Tensor) -> float:
        """Set tr* = mean + std of the reconstruction errors of ``benign_x`` (held-out benign flows)."""
        if len(benign_x) < 2:
            raise ValueError("the autoencoder threshold needs at least two held-out benign flows")
        was = self.training
        self.eval()
        err = self.reconstruction_error(benign_x.to(next(self.parameters()).device)).double()
        self.train(was)
        self.threshold = float(err.mean() + err.std())
        return self.threshold

    def forward(self, x: Tensor) -> Tensor:
        if self.threshold is None:
            raise RuntimeError("the autoencoder's threshold is not calibrated; call calibrate(benign_flows) first")
        thr = max(self.threshold, 1e-12)
        s = ((self.reconstruction_error(x) - thr) / thr).unsqueeze(1)
        return torch.cat([-s, s], dim=1)


class FlowGRU(nn.Module):
    """Sequence classifier over windows of consecutive flows (N, T, F): two GRU layers (hidden 32) and a linear
    head on the last step, the shape of FLAME's NIDS model (DIoT: 2 GRU layers + FC), scaled to flow features."""

    def __init__(self, num_features: int, num_classes: int = 2, hidden: int = 32, layers: int = 2):
        super().__init__()
        self.gru = nn.GRU(num_features, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3:
            raise ValueError(f"gru expects windows (N, T, F), got {tuple(x.shape)}; set data.traffic.window")
        out, _ = self.gru(x)
        return self.head(out[:, -1])


MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
MODELS.register(LeNet, "lenet", "LeNet-5 style CNN (two conv layers, three dense layers)")
MODELS.register(SmallCNN, "small_cnn", "small two-layer CNN for fast tests and the synthetic dataset")
MODELS.register(ResNetLight, "resnet_light", "light ResNet with batch norm (three stages of basic blocks)")
MODELS.register(FlowMLP, "mlp", "network traffic: MLP over flow features (the traffic default)")
MODELS.register(FlowAutoencoder, "autoencoder", "network traffic: N-BaIoT's benign-only autoencoder anomaly detector")
MODELS.register(FlowGRU, "gru", "network traffic: two GRU layers over windows of flows (data.traffic.window)")
TRAFFIC_MODELS: tuple[str, ...] = ("mlp", "autoencoder", "gru")  # built from (num_features, num_classes)


def build_model(
    name: str,
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int = 28,
    input_mean: Optional[Sequence[float]] = None,
    input_std: Optional[Sequence[float]] = None,
    num_features: Optional[int] = None,
) -> nn.Module:
    """Instantiate a model by name (see :data:`MODELS`), optionally standardising its input per channel.

    Flow-feature models (:data:`TRAFFIC_MODELS`) take ``num_features`` instead of the image arguments.
    """
    if name in TRAFFIC_MODELS:
        if num_features is None or num_features < 1:
            raise ConfigError(f"model {name!r} needs num_features >= 1 (the number of flow-feature columns)")
        return MODELS.get(name)(num_features=num_features, num_classes=num_classes)
    model = MODELS.get(name)(in_channels=in_channels, num_classes=num_classes, image_size=image_size)
    if input_mean is not None or input_std is not None:
        if input_mean is None or input_std is None:
            raise ValueError("input normalisation needs both input_mean and input_std")
        model.set_input_normalization(input_mean, input_std)
    return model
