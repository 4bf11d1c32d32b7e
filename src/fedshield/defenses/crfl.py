"""CRFL (Xie, Chen, Chen, Li, "CRFL: Certifiably Robust Federated Learning against Backdoor Attacks", ICML 2021).

The paper text was not read; this follows the authors' code ``AI-secure/CRFL`` (docs/defenses.md, CRFL.1) [C]
(``main.py``, ``configs/*.yaml``, ``smooth_mnist.py``, ``certify_mnist.py``).

Training, one round (``variant="paper"``, the default):

1. FedAvg of the client models ("mean_param"): G' = G + mean_i Δ_i (uniform; ``weighting="samples"`` weights by
   the reported sample counts instead).
2. Clip the *global model's* whole parameter norm (not the update): ρ_t = min(``clip_threshold``, a·t + b), and
   G' ← G' · ρ_t / ‖G'‖ if ‖G'‖ > ρ_t. t is the 1-based round number (the authors' loop starts at epoch 1).
   MNIST: a = 0.1, b = 2, threshold 15 (the defaults); EMNIST: a = 0.25, b = 4; LOAN: a = 0.025, b = 2 [C].
   The norm runs over the trainable parameters (``named_parameters`` in the authors' code), and so does the
   scaling; batch-norm buffers are averaged and left unclipped. The authors divide by ‖G'‖ + 1e-6; we use ‖G'‖
   exactly (a relative difference below 1e-6/ρ_t).
3. Add N(0, σ²), σ = ``sigma`` (0.01), to every trainable coordinate.

Choice forced by the contract: the authors evaluate the *clipped* model before adding noise and let the noised one
start the next round. A defense here returns one model per round, so the returned model is the **noised** one
(the model that starts the next round; correct for training). The clipped model's norm is reported in
``info["clipped_norm"]`` and the clipped model itself is kept in :attr:`CRFL.last_clipped_params`, so a simulator
that wants the authors' evaluation can evaluate ``defense.last_clipped_params`` right after ``aggregate``
(``getattr(defense, "last_clipped_params", None)``; fall back to the returned model when it is None).

Test time (parameter smoothing, the ``smooth_*.py``/``certify_*.py`` scripts): :func:`smoothed_predict` and
:func:`certify` below are pure functions; :func:`crfl_certified_magnitude` is the authors' bound on the backdoor
magnitude.

``variant="fedward_code"`` reproduces the "crfl" baseline of the Fedward authors' code (docs/defenses.md, CRFL.4) [C],
which is not CRFL: FLAME-style clipping of every update to the median update norm S_t, FedAvg (uniform mean) of
all clipped updates, and Gaussian noise of std λ·S_t (λ = ``lam`` = 1e-4) on every trainable coordinate.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from ..core.numeric import clip_updates, is_finite_number, is_int, is_number, median
from ..models import ParamLayout, load_flat_params
from .base import Aggregate, Defense, RoundInput, require
from .registry import register

__all__ = [
    "CRFL",
    "crfl_clip_bound",
    "clip_model_norm",
    "smoothed_predict",
    "certify",
    "crfl_certified_magnitude",
]


def crfl_clip_bound(t: int, clip_threshold: float = 15.0, clip_a: float = 0.1, clip_b: float = 2.0) -> float:
    """ρ_t = min(clip_threshold, a·t + b) (authors' ``main.py``: dynamic threshold epoch·0.1 + 2 for MNIST)."""
    return min(float(clip_threshold), clip_a * t + clip_b)


def clip_model_norm(params: Tensor, bound: float) -> tuple[Tensor, float]:
    """(params · min(1, ρ/‖params‖), ‖params‖): scale a whole parameter vector to norm at most ρ."""
    norm = float(torch.linalg.vector_norm(params.to(torch.float64)))
    if norm > bound and norm > 0:
        return params * (bound / norm), norm
    return params.clone(), norm


@register
class CRFL(Defense):
    """CRFL training: FedAvg, clip the global model's norm to min(thr, a·t + b), add N(0, σ²) to every parameter.

    Parameters
    ----------
    variant:
        ``"paper"`` (default; the CRFL authors' code, see module docstring) or ``"fedward_code"`` (the Fedward
        authors' "crfl" baseline: median-norm clipping of the updates, FedAvg, noise λ·S_t).
    clip_threshold, clip_a, clip_b:
        ρ_t = min(clip_threshold, clip_a·t + clip_b); defaults 15, 0.1, 2 (MNIST). EMNIST: 0.25, 4; LOAN: 0.025, 2.
    sigma:
        std of the Gaussian parameter noise added every round (authors' ``sigma_param``), default 0.01.
    weighting:
        ``"uniform"`` (default) or ``"samples"`` (FedAvg weights from the reported sample counts) [U: the authors'
        "mean_param" is a plain mean].
    lam:
        ``variant="fedward_code"`` only: noise std = lam · S_t (default 1e-4, as in the Fedward code).

    ``info``: accepted, clip_bound (ρ_t or S_t), norm_before (‖G'‖ before clipping), clipped_norm (norm of the
    clipped model the authors evaluate), clipped (1 if clipping changed it), noise_std.
    """

    name = "crfl"
    summary = "FedAvg, clip the global model's parameter norm to min(thr, a*t+b), add Gaussian parameter noise"
    paper = "Xie et al., CRFL: Certifiably Robust Federated Learning against Backdoor Attacks, ICML 2021"

    def __init__(
        self,
        variant: str = "paper",
        clip_threshold: float = 15.0,
        clip_a: float = 0.1,
        clip_b: float = 2.0,
        sigma: float = 0.01,
        weighting: str = "uniform",
        lam: float = 1e-4,
    ):
        require(variant in ("paper", "fedward_code"), "variant", variant, "allowed: 'paper', 'fedward_code'")
        require(is_finite_number(clip_threshold) and clip_threshold > 0,
                "clip_threshold", clip_threshold, "allowed: a finite number > 0")
        require(is_finite_number(clip_a) and clip_a >= 0, "clip_a", clip_a,
                "allowed: a finite number >= 0")
        require(is_finite_number(clip_b) and clip_b > 0, "clip_b", clip_b,
                "allowed: a finite number > 0")
        require(is_finite_number(sigma) and sigma >= 0, "sigma", sigma,
                "allowed: a finite number >= 0")
        require(weighting in ("uniform", "samples"), "weighting", weighting, "allowed: 'uniform', 'samples'")
        require(is_finite_number(lam) and lam >= 0, "lam", lam, "allowed: a finite number >= 0")
        self.variant = variant
        self.clip_threshold = float(clip_threshold)
        self.clip_a = float(clip_a)
        self.clip_b = float(clip_b)
        self.sigma = float(sigma)
        self.weighting = weighting
        self.lam = float(lam)
        self._last_clipped: Optional[Tensor] = None

    @property
    def last_clipped_params(self) -> Optional[Tensor]:
        """The clipped, not yet noised global model of the last round (what the CRFL authors evaluate)."""
        return self._last_clipped

    def _mean(self, upd: Tensor, inp: RoundInput) -> Tensor:
        if self.weighting == "uniform":
            return upd.mean(dim=0)
        w = inp.num_samples.to(device=upd.device, dtype=upd.dtype)
        require(bool(w.sum() > 0), "num_samples", inp.num_samples.tolist(), "need a positive sum for weighting")
        return (upd * (w / w.sum()).unsqueeze(1)).sum(dim=0)

    def _noise(self, new: Tensor, train: Tensor, std: float, gen: torch.Generator) -> None:
        if std > 0:
            z = torch.randn(int(train.sum()), generator=gen, device=gen.device, dtype=new.dtype)
            new[train] = new[train] + (std * z).to(device=new.device, dtype=new.dtype)

    def _aggregate(self, inp: RoundInput) -> Aggregate:
        g = inp.global_params
        upd = inp.updates
        train = inp.layout.trainable_mask(device=upd.device)
        accepted = torch.ones(inp.n, dtype=torch.bool)
        if self.variant == "fedward_code":
            norms = torch.linalg.vector_norm(upd[:, train].to(torch.float64), dim=1)
            bound = float(median(norms))
            clipped = upd.clone()
            clipped[:, train] = clip_updates(upd[:, train], bound, norms)
            new = g + self._mean(clipped, inp)
            self._last_clipped = new.clone()
            std = self.lam * bound
            self._noise(new, train, std, inp.generator)
            info = {"accepted": float(inp.n), "clip_bound": bound, "norm_before": float("nan"),
                    "clipped_norm": float(torch.linalg.vector_norm(new[train].to(torch.float64))),
                    "clipped": float(bool((norms > bound).any())), "noise_std": std}
            return Aggregate(new, accepted, info)

        new = g + self._mean(upd, inp)
        rho = crfl_clip_bound(inp.round, self.clip_threshold, self.clip_a, self.clip_b)
        clipped_tr, norm_before = clip_model_norm(new[train], rho)
        new[train] = clipped_tr
        clipped_norm = float(torch.linalg.vector_norm(new[train].to(torch.float64)))
        self._last_clipped = new.clone()
        self._noise(new, train, self.sigma, inp.generator)
        info = {"accepted": float(inp.n), "clip_bound": rho, "norm_before": norm_before,
                "clipped_norm": clipped_norm, "clipped": float(norm_before > rho), "noise_std": self.sigma}
        return Aggregate(new, accepted, info)


# ---------------------------------------------------------------------------------------------- test time


@torch.no_grad()
def smoothed_predict(
    model_fn: Callable[[], nn.Module],
    params: Tensor,
    x: Tensor,
    sigma_t: float = 0.01,
    num_samples: int = 1000,
    generator: Optional[torch.Generator] = None,
    batch_size: int = 1000,
    num_classes: Optional[int] = None,
) -> tuple[Tensor, Tensor]:
    """CRFL parameter smoothing: (majority labels (m,), vote counts (m, C) int64) over noisy parameter copies.

    For k = 1..``num_samples``: θ_k = params + N(0, σ_T² I) on the trainable coordinates (buffers untouched), and
    every input votes for argmax f(x; θ_k). The smoothed prediction is the most voted class (ties: smallest label).
    Authors' MNIST test settings: N_m = 1000, σ_T = 0.01 [C]. Noise comes from ``generator`` (a fresh seed-0
    generator if None). Cost: ``num_samples`` forward passes over ``x``.
    """
    require(is_number(sigma_t) and sigma_t >= 0, "sigma_t", sigma_t, "allowed: a number >= 0")
    require(is_int(num_samples) and num_samples >= 1, "num_samples", num_samples, "allowed: an integer >= 1")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    model = model_fn()
    layout = ParamLayout.from_module(model)
    device = next(model.parameters()).device
    params = params.to(device)
    train = layout.trainable_mask(device=device)
    n_tr = int(train.sum())
    model.eval()
    counts: Optional[Tensor] = None
    for _ in range(num_samples):
        noisy = params.clone()
        z = torch.randn(n_tr, generator=gen, device=gen.device, dtype=params.dtype).to(device)
        noisy[train] = noisy[train] + sigma_t * z
        load_flat_params(model, noisy, layout)
        preds = []
        for start in range(0, len(x), batch_size):
            preds.append(model(x[start : start + batch_size].to(device)).argmax(dim=1))
        pred = torch.cat(preds)
        if counts is None:
            c = num_classes if num_classes is not None else int(model(x[:1].to(device)).shape[1])
            counts = torch.zeros(len(x), c, dtype=torch.int64, device=device)
        counts.scatter_add_(1, pred.unsqueeze(1), torch.ones_like(pred).unsqueeze(1))
    assert counts is not None
    return counts.argmax(dim=1).cpu(), counts.cpu()


def certify(counts: Tensor, alpha: float = 0.001, sigma_t: float = 0.01) -> dict[str, Tensor]:
    """Hoeffding bounds on the top-two class probabilities of the smoothed classifier (``certify_mnist.py``) [C].

    With M = Σ_c counts[c] votes, p̂_A = top count / M (label A = the most voted class) and p̂_B = runner-up
    count / M:

        p_A = max(1e−8, p̂_A − sqrt(ln(1/α) / (2M)))      (one-sided Hoeffding lower bound)
        p_B = min(1 − 1e−8, p̂_B + sqrt(ln(1/α) / (2M)))  (upper bound)

    These are CRFL's bounds (not Clopper–Pearson). The prediction is certified when p_A > p_B, and then the
    certified statistic is CRFL's Hellinger-type quantity H = −ln(1 − (√p_A − √p_B)²) > 0; the tolerable backdoor
    magnitude is :func:`crfl_certified_magnitude`, which divides H·σ_train² by the training-dependent terms.
    A Cohen-style parameter-space radius σ_T·Φ⁻¹(p_A) is also returned as ``radius_gaussian`` for reference
    (valid for an ℓ2 shift of the *final* parameters only, not CRFL's guarantee); both are 0 when not certified.

    Returns a dict of tensors (m,): label, pa, pb, certified (bool), hellinger, radius_gaussian.
    """
    require(is_number(alpha) and 0 < alpha < 1, "alpha", alpha, "allowed: 0 < alpha < 1")
    require(is_number(sigma_t) and sigma_t >= 0, "sigma_t", sigma_t, "allowed: a number >= 0")
    c = torch.as_tensor(counts)
    if c.dim() == 1:
        c = c.unsqueeze(0)
    require(c.dim() == 2 and c.shape[1] >= 2, "counts", tuple(c.shape), "allowed: an (m, C) matrix with C >= 2")
    c = c.to(torch.float64)
    m = c.sum(dim=1)
    require(bool((m > 0).all()), "counts", "rows with no votes", "every row needs at least one vote")
    top2 = torch.topk(c, 2, dim=1)
    label = top2.indices[:, 0]
    pa_hat = top2.values[:, 0] / m
    pb_hat = top2.values[:, 1] / m
    eps = torch.sqrt(math.log(1.0 / alpha) / (2.0 * m))
    pa = torch.clamp(pa_hat - eps, min=1e-8)
    pb = torch.clamp(pb_hat + eps, max=1 - 1e-8)
    certified = pa > pb
    hell = torch.where(certified, -torch.log1p(-(pa.sqrt() - pb.sqrt()) ** 2), torch.zeros_like(pa))
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    gauss = torch.where(pa > 0.5, normal.icdf(torch.clamp(pa, max=1 - 1e-12)), torch.zeros_like(pa))
    gauss = torch.where(certified, sigma_t * gauss.clamp_min(0.0), torch.zeros_like(gauss))
    return {"label": label, "pa": pa, "pb": pb, "certified": certified, "hellinger": hell, "radius_gaussian": gauss}


def crfl_certified_magnitude(
    pa: float,
    pb: float,
    *,
    sigma_train: float,
    sigma_test: float,
    lr: float,
    num_models: int,
    num_attackers: int,
    poison_per_batch: int,
    batch_size: int,
    scale_factor: float,
    local_iters: float,
    t_adv: int,
    rounds: int,
    clip_a: float = 0.1,
    clip_b: float = 2.0,
    clip_threshold: float = float("inf"),
    rho_tadv: float = 3.0,
    agg_weights: Optional[Sequence[float]] = None,
) -> float:
    """CRFL's certified bound on the backdoor pattern magnitude ‖δ‖ (``certify_mnist.py::cal_prob_bound``) [C].

        ‖δ‖ < sqrt( −ln(1 − (√p_A − √p_B)²) · σ_train²
                    / (2 R τ² L_Z² Σ_i p_i² γ² η² (q_B/n_B)² · Π_{t=t_adv+1}^{T−1} (2Φ(ρ_t/σ_train) − 1)
                       · (2Φ(ρ_T/σ_test) − 1)) )

    with R attackers, τ local iterations, L_Z = sqrt(2 + 2ρ + ρ²) (ρ = ``rho_tadv``, 3 in the authors' code), p_i
    the aggregation weights of the attackers (1/N each by default), γ the scale factor, η the learning rate, q_B/n_B
    the poisoned share of a batch, ρ_t the training clip bound. ρ_t = min(clip_threshold, a·t + b); the authors'
    certification script uses a·t + b without the min (``clip_threshold=inf``, the default here). Returns +inf when
    p_A = 1 and 0 when p_A ≤ p_B.
    """
    if pa >= 1.0:
        return float("inf")
    if pa <= pb:
        return 0.0
    weights = list(agg_weights) if agg_weights is not None else [1.0 / num_models] * num_attackers
    sq = sum(w * w for w in weights)
    lz = math.sqrt(2 + 2 * rho_tadv + rho_tadv**2)
    fraction = -math.log(1 - (math.sqrt(pa) - math.sqrt(pb)) ** 2) * sigma_train**2
    denom = (2 * num_attackers * local_iters**2 * lz**2 * sq * scale_factor**2 * lr**2
             * (poison_per_batch / batch_size) ** 2)
    phi = torch.distributions.Normal(0.0, 1.0).cdf

    def rho(t: int) -> float:
        return min(clip_threshold, clip_a * t + clip_b)

    contract = 1.0
    for t in range(t_adv + 1, rounds):
        contract *= 2 * float(phi(torch.tensor(rho(t) / sigma_train, dtype=torch.float64))) - 1
    contract *= 2 * float(phi(torch.tensor(rho(rounds) / sigma_test, dtype=torch.float64))) - 1
    return math.sqrt(fraction / (denom * contract))
