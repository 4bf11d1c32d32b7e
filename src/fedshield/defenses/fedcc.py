"""FedCC (Jeong, Son, Kim, Lee, "FedCC: Robust Federated Learning against Model Poisoning Attacks", arXiv 2212.01976).

The paper text was not read; docs/defenses.md, FedCC summarises the abstract and the authors' 2025 code
(``HyejunJeong/FedCC`` ``src/aggregate.py``, ``src/cka.py``) [P-abs + C]. One round (``variant="paper"``):

1. Penultimate-layer representation (PLR) of each client: the weight matrix of the second-to-last linear layer of
   its local model W_i = G + Δ_i (the authors take ``keys[-4]`` of the state dict, which is that matrix for the
   models they use). Here: the second-to-last trainable weight entry with a 2-D shape in the layout; if the model
   has fewer than two 2-D weights (e.g. ``small_cnn``), the second-to-last trainable weight with ≥ 2 dimensions,
   reshaped to (out, −1) [U]. ``layer`` names the entry explicitly.
2. CKA similarity between the global PLR and each client's PLR, over the rows of the weight matrix (rows are the
   "examples", columns the features) [C]:
   * linear: CKA(X, Y) = ‖Yᶜᵀ Xᶜ‖_F² / (‖Xᶜᵀ Xᶜ‖_F ‖Yᶜᵀ Yᶜ‖_F), Xᶜ = X with column means removed;
   * RBF (default, as the authors' code): K_ij = exp(−‖x_i − x_j‖² / (2σ²)) with σ² = the median of the non-zero
     pairwise squared distances (σ = sqrt of that median), per matrix; CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))
     with HSIC(K, L) = tr(K H L H) (H the centring matrix; the 1/(m−1)² factors cancel).
3. k-means with k = 2 on the 1-D scores. We solve it exactly (1-D k-means is optimal over the n − 1 splits of
   the sorted scores), so no randomness is needed; sklearn's ``KMeans(2, n_init=10)`` finds the same optimum in
   practice. The larger cluster is benign; on a tie the cluster with the higher mean similarity [U]. If all
   scores are equal every client is accepted.
4. Aggregate: the uniform mean of the benign updates (the 2022 v1 "filter, then FedAvg" form, not verified).
   The 2025 code's layer-wise aggregation (softmax-normalised similarity weights for the other layers, the
   benign cluster only for the penultimate layer) is **not implemented**.

``variant="fedward_code"`` reproduces the Fedward authors' "fedcc" baseline (docs/defenses.md, FedCC.3) [C]: sklearn
``KMeans(n_clusters=2, n_init=10)`` on the concatenated *output layer* weight + bias **updates** (no CKA), with
``random_state`` drawn from ``inp.generator``; the mean of the larger cluster's updates (ties: the cluster sklearn
labels 0).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from ..core.numeric import median, two_means_1d
from ..models import LayoutEntry, ParamLayout
from .base import Aggregate, Defense, DefenseContext, ParameterError, RoundInput, require
from .registry import register

__all__ = ["FedCC", "linear_cka", "rbf_cka", "two_means_labels", "penultimate_entry", "output_entries"]


def _centre_gram(k: Tensor) -> Tensor:
    return k - k.mean(dim=0, keepdim=True) - k.mean(dim=1, keepdim=True) + k.mean()


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA of two (m, p) / (m, q) matrices whose rows are paired examples; float64."""
    x = x.to(torch.float64).reshape(x.shape[0], -1)
    y = y.to(torch.float64).reshape(y.shape[0], -1)
    x = x - x.mean(dim=0, keepdim=True)
    y = y - y.mean(dim=0, keepdim=True)
    num = torch.linalg.matrix_norm(y.T @ x) ** 2
    den = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    return float(num / den) if float(den) > 0 else 0.0


def _rbf_gram(x: Tensor, sigma: Optional[float] = None) -> Tensor:
    gram = x @ x.T
    sq = torch.diagonal(gram)
    d2 = (sq.unsqueeze(0) + sq.unsqueeze(1) - 2 * gram).clamp_min(0.0)
    if sigma is None:
        nz = d2[d2 > 0]
        sigma2 = float(median(nz)) if nz.numel() else 1.0  # numpy-style median (mean of the middle two)
    else:
        sigma2 = sigma * sigma
    return torch.exp(-d2 / (2.0 * sigma2))


def rbf_cka(x: Tensor, y: Tensor, sigma: Optional[float] = None) -> float:
    """Kernel CKA with RBF kernels, σ² = median non-zero squared pairwise distance of each matrix (default)."""
    x = x.to(torch.float64).reshape(x.shape[0], -1)
    y = y.to(torch.float64).reshape(y.shape[0], -1)
    kx = _centre_gram(_rbf_gram(x, sigma))
    ky = _centre_gram(_rbf_gram(y, sigma))
    hxy = (kx * ky).sum()
    den = torch.sqrt((kx * kx).sum() * (ky * ky).sum())
    return float(hxy / den) if float(den) > 0 else 0.0


def two_means_labels(scores: np.ndarray) -> np.ndarray:
    """Labels of the exact 1-D 2-means of ``scores`` (0 = lower cluster, 1 = upper; minimal within-cluster sum of
    squares, :func:`fedshield.core.numeric.two_means_1d`). All equal scores (or one score) → every label 0."""
    s = np.asarray(scores, dtype=np.float64)
    labels = np.zeros(s.size, dtype=np.int64)
    if s.size < 2 or np.ptp(s) == 0:
        return labels
    order, split, _ = two_means_1d(torch.from_numpy(s).unsqueeze(1))
    labels[order[int(split[0]):, 0].numpy()] = 1
    return labels


def _is_matrix_weight(e: LayoutEntry) -> bool:
    return e.kind == "weight" and len(e.shape) >= 2


def penultimate_entry(layout: ParamLayout, layer: Optional[str] = None) -> LayoutEntry:
    """The PLR weight: ``layer`` if given, else the second-to-last 2-D trainable weight (fallback: ≥ 2-D)."""
    if layer is not None:
        try:
            e = layout[layer]
        except KeyError:
            raise ParameterError(f"layer={layer!r} is invalid; allowed: a weight tensor name of the model, "
                                 f"one of {[x.name for x in layout.entries if _is_matrix_weight(x)]}") from None
        require(_is_matrix_weight(e), "layer", layer, "allowed: a trainable weight with >= 2 dimensions")
        return e
    two_d = [e for e in layout.entries if e.kind == "weight" and len(e.shape) == 2]
    if len(two_d) >= 2:
        return two_d[-2]
    multi = [e for e in layout.entries if _is_matrix_weight(e)]
    if len(multi) < 2:
        raise ParameterError("layer=None is invalid for this model: it has fewer than two weight matrices; "
                             "name the representation layer with the 'layer' parameter")
    return multi[-2]


def output_entries(layout: ParamLayout, layer: Optional[str] = None) -> list[LayoutEntry]:
    """The output layer's weight (the last 2-D trainable weight, or ``layer``) and its bias if the model has one."""
    if layer is not None:
        try:
            w = layout[layer]
        except KeyError:
            raise ParameterError(f"layer={layer!r} is invalid; allowed: a weight tensor name of the model") from None
        require(_is_matrix_weight(w), "layer", layer, "allowed: a trainable weight with >= 2 dimensions")
    else:
        two_d = [e for e in layout.entries if e.kind == "weight" and len(e.shape) == 2]
        if not two_d:
            raise ParameterError("layer=None is invalid for this model: it has no 2-D weight (output layer); "
                                 "name it with the 'layer' parameter")
        w = two_d[-1]
    out = [w]
    if w.name.endswith("weight"):
        bias_name = w.name[: -len("weight")] + "bias"
        if bias_name in layout.names:
            out.append(layout[bias_name])
    return out


@register
class FedCC(Defense):
    """FedCC: CKA similarity of the penultimate-layer weights to the global ones, 2-means, keep the larger cluster.

    Parameters
    ----------
    variant:
        ``"paper"`` (default: CKA on the PLR, see the module docstring) or ``"fedward_code"`` (KMeans(2) on the
        output-layer weight + bias updates, the Fedward code's baseline).
    kernel:
        ``"rbf"`` (default, authors' code) or ``"linear"`` CKA (``variant="paper"`` only).
    layer:
        name of the weight tensor to use (PLR for ``"paper"``, output layer for ``"fedward_code"``); ``None``
        (default) finds it from the layout.

    ``info``: accepted, cka_min, cka_max, cka_benign_mean (NaN for ``fedward_code``).
    """

    name = "fedcc"
    summary = "CKA of penultimate-layer weights to the global model, 2-means on the scores, average the larger cluster"
    paper = "Jeong et al., FedCC: Robust Federated Learning against Model Poisoning Attacks, arXiv 2212.01976"

    def __init__(self, variant: str = "paper", kernel: str = "rbf", layer: Optional[str] = None,
                 layout: Optional[ParamLayout] = None):
        require(variant in ("paper", "fedward_code"), "variant", variant, "allowed: 'paper', 'fedward_code'")
        require(kernel in ("rbf", "linear"), "kernel", kernel, "allowed: 'rbf', 'linear'")
        require(layer is None or isinstance(layer, str), "layer", layer, "allowed: None or a tensor name")
        self.variant = variant
        self.kernel = kernel
        self.layer = layer
        if layout is not None:  # validate the layer choice at construction
            self._entries(layout)

    context_args = ("layout",)

    @classmethod
    def context_values(cls, context: DefenseContext) -> dict[str, Any]:
        return {"layout": context.layout}

    def _entries(self, layout: ParamLayout) -> list[LayoutEntry]:
        if self.variant == "paper":
            return [penultimate_entry(layout, self.layer)]
        return output_entries(layout, self.layer)

    def similarity(self, a: Tensor, b: Tensor) -> float:
        return rbf_cka(a, b) if self.kernel == "rbf" else linear_cka(a, b)

    def _aggregate(self, inp: RoundInput) -> Aggregate:
        n = inp.n
        entries = self._entries(inp.layout)
        info: dict[str, float] = {}
        if self.variant == "paper":
            e = entries[0]
            g_plr = inp.global_params[e.slice].reshape(e.shape[0], -1)
            w_plr = (inp.global_params[e.slice].unsqueeze(0) + inp.updates[:, e.slice]).reshape(n, e.shape[0], -1)
            scores = np.array([self.similarity(g_plr, w_plr[i]) for i in range(n)])
            labels = two_means_labels(scores)
            sizes = np.bincount(labels, minlength=2)
            if sizes[0] != sizes[1]:
                benign = int(np.argmax(sizes))
            else:
                benign = int(np.argmax([scores[labels == 0].mean(), scores[labels == 1].mean()]))
            mask = labels == benign
            info.update(cka_min=float(scores.min()), cka_max=float(scores.max()),
                        cka_benign_mean=float(scores[mask].mean()))
        else:
            from sklearn.cluster import KMeans

            feats = torch.cat([inp.updates[:, e.slice] for e in entries], dim=1).to(torch.float64).cpu().numpy()
            gen = inp.generator
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen, device=gen.device).item())
            if n < 2 or np.all(feats == feats[0]):
                mask = np.ones(n, dtype=bool)
            else:
                labels = KMeans(n_clusters=2, n_init=10, random_state=seed).fit_predict(feats)
                mask = labels == int(np.argmax(np.bincount(labels, minlength=2)))
            info.update(cka_min=float("nan"), cka_max=float("nan"), cka_benign_mean=float("nan"))
        accepted = torch.from_numpy(mask.astype(bool))
        acc_dev = accepted.to(inp.updates.device)
        new = inp.global_params + inp.updates[acc_dev].mean(dim=0)
        info.update(accepted=float(accepted.sum()))
        return Aggregate(new, accepted, info)
