"""DeepSight (Rieger, Nguyen, Miettinen, Sadeghi, "DeepSight: Mitigating Backdoor Attacks in Federated Learning
Through Deep Model Inspection", NDSS 2022), Algorithm 1 (docs/defenses.md, DeepSight) [P].

One round: filtering → clipping → FedAvg.

Features of every update (the output layer is the last 2-D trainable weight of the layout and its bias):

* cosine distances of the output-layer **bias updates** (one matmul; ``flame.cosine_distances``);
* NEUPs: E_i = |Δb_i| + Σ_h |Δw_{i,h}| for each output neuron i, C_i = E_i² / Σ_j E_j² (0 if all E are 0);
* DDifs: for each of ``num_seeds`` = 3 seeds, ``num_ddif_samples`` (20,000 in the paper) random inputs s_m,
  DDif_i = (1/N) Σ_m softmax(f(s_m; W))_i / softmax(f(s_m; G))_i. The inputs are uniform on [0, 1] in pixel space
  (the model applies its own input standardisation) [U: the paper says "random input samples"]. Every seed is a
  63-bit draw from ``inp.generator``. The input shape is ``context.extra["input_shape"]``, else the shape of one
  ``context.server_data`` sample, else (1, 28, 28); it is checked with one forward pass at construction.

Classification (Alg. 1): threshold exceedings TE = #{i : C_i > max(0.01, 1/P) · max_j C_j} (P output neurons);
an update is labelled suspicious iff TE ≤ median(TE)/2 (Alg. 1 uses "≤" [P]; median = numpy-style).

Clustering: HDBSCAN separately on the cosine matrix (precomputed), on the NEUP vectors and on each DDif set
(Euclidean [U]); each clustering becomes a 0/1 matrix (0 iff i and j are in the same cluster, noise points each
in a cluster of their own, diagonal 0); the DDif matrices are averaged, then averaged with the NEUP and cosine
matrices (equal weights 1/3 each); a final HDBSCAN on that matrix (precomputed). The HDBSCAN hyper-parameters are
not in the text read: we use ``sklearn.cluster.HDBSCAN(min_cluster_size=2, allow_single_cluster=True)`` with its
default ``min_samples`` (= min_cluster_size) [U: library-default-like]. A final cluster (each noise point on its
own) is accepted iff its share of suspicious updates is < τ = 1/3.

Clipping and aggregation: λ_i = min(1, S / ‖Δ_i‖) with S = the median L2 norm of **all** updates (trainable
coordinates), and G ← G + mean of the clipped accepted updates (uniform). Batch-norm buffers: plain mean of the
accepted clients' buffer updates (docs/defenses.md, Conventions.3). If nothing is accepted the global model is kept.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from sklearn.cluster import HDBSCAN
from torch import Tensor, nn

from ..core.numeric import clip_updates, cosine_distances, is_bool, is_finite_number, is_int, median
from ..models import ParamLayout, load_flat_params
from .base import Aggregate, Defense, DefenseContext, ParameterError, RoundInput, require
from .fedcc import output_entries
from .registry import register

__all__ = [
    "DeepSight",
    "neups",
    "threshold_exceedings",
    "suspicious_labels",
    "cluster_labels",
    "cluster_dissimilarity",
]


def neups(weight_updates: Tensor, bias_updates: Optional[Tensor]) -> Tensor:
    """(n, P) normalised energy updates C_i = E_i² / Σ_j E_j², E_i = |Δb_i| + Σ_h |Δw_{i,h}|; float64.

    ``weight_updates`` is (n, P, H), ``bias_updates`` (n, P) or None.
    """
    w = weight_updates.to(torch.float64)
    e = w.abs().reshape(w.shape[0], w.shape[1], -1).sum(dim=2)
    if bias_updates is not None:
        e = e + bias_updates.to(torch.float64).abs()
    e2 = e * e
    total = e2.sum(dim=1, keepdim=True)
    return torch.where(total > 0, e2 / torch.where(total > 0, total, torch.ones_like(total)), torch.zeros_like(e2))


def threshold_exceedings(c: Tensor) -> Tensor:
    """TE per row: #{i : C_i > max(0.01, 1/P) · max_j C_j} (int64)."""
    p = c.shape[1]
    thr = max(0.01, 1.0 / p) * c.max(dim=1, keepdim=True).values
    return (c > thr).sum(dim=1)


def suspicious_labels(te: Tensor) -> Tensor:
    """Bool (n,): suspicious iff TE ≤ median(TE) / 2 (Alg. 1, "≤")."""
    med = float(median(te.to(torch.float64)))
    return te.to(torch.float64) <= med / 2.0


def cluster_labels(x: np.ndarray, metric: str, min_cluster_size: int = 2) -> np.ndarray:
    """HDBSCAN labels with noise points relabelled to fresh singleton clusters (labels ≥ 0 throughout).

    A row with NaN/Inf (e.g. the DDifs of a model that huge updates made overflow) cannot be placed: it is a
    singleton cluster of its own, and the finite rows are clustered without it."""
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        labels = np.full(x.shape[0], -1)
        sub = x[finite][:, finite] if metric == "precomputed" else x[finite]
        labels[finite] = cluster_labels(sub, metric, min_cluster_size)
        nxt = labels.max() + 1 if finite.any() else 0
        labels[~finite] = np.arange(nxt, nxt + int((~finite).sum()))
        return labels
    n = x.shape[0]
    if n < 2:
        return np.arange(n)
    if n < min_cluster_size:
        return np.arange(n)
    labels = np.asarray(
        HDBSCAN(min_cluster_size=min_cluster_size, metric=metric, allow_single_cluster=True, copy=True).fit_predict(x)
    ).copy()
    nxt = labels.max() + 1 if labels.size else 0
    for i in np.nonzero(labels < 0)[0]:
        labels[i] = nxt
        nxt += 1
    return labels


def cluster_dissimilarity(labels: np.ndarray) -> np.ndarray:
    """(n, n) float64: 0 where i and j share a cluster (labels already made noise-free), 1 elsewhere."""
    labels = np.asarray(labels)
    return (labels[:, None] != labels[None, :]).astype(np.float64)


@register
class DeepSight(Defense):
    """DeepSight: label updates by NEUP threshold exceedings, cluster on cosine/NEUP/DDif features, drop clusters
    with ≥ τ suspicious members, clip to the median norm, FedAvg.

    Parameters
    ----------
    num_ddif_samples:
        random inputs per seed for the DDifs (default 20000, the paper's value; smaller is fine for tests).
    num_seeds:
        number of DDif seeds (default 3).
    tau:
        a cluster is accepted iff its share of suspicious updates is < tau (default 1/3).
    min_cluster_size:
        HDBSCAN ``min_cluster_size`` for every clustering (default 2) [U].
    clipping:
        clip the accepted updates to the median norm of all updates (default True).
    ddif_batch_size:
        forward-pass batch size for the DDifs (default 1000; does not change results beyond float rounding).

    Needs ``context.model_fn`` (always set by the simulator). ``info``: accepted, suspicious, num_clusters (final
    clusters, singletons included), num_noise (updates HDBSCAN left as noise in the final clustering), clip_bound,
    te_median.
    """

    name = "deepsight"
    summary = "NEUP/DDif/cosine clustering with threshold-exceeding labels, median-norm clipping, FedAvg"
    paper = "Rieger et al., DeepSight: Mitigating Backdoor Attacks in Federated Learning Through Deep Model Inspection, NDSS 2022"

    def __init__(
        self,
        model_fn: Optional[Callable[[], nn.Module]] = None,
        input_shape: Optional[Sequence[int]] = None,
        num_ddif_samples: int = 20000,
        num_seeds: int = 3,
        tau: float = 1.0 / 3.0,
        min_cluster_size: int = 2,
        clipping: bool = True,
        ddif_batch_size: int = 1000,
        device: str = "cpu",
    ):
        self.check_params(num_ddif_samples, num_seeds, tau, min_cluster_size, clipping, ddif_batch_size)
        if model_fn is None:
            raise ParameterError(
                "deepsight needs the model architecture for its DDifs (context.model_fn is missing; the simulator "
                "provides it)"
            )
        shape = tuple(int(s) for s in (input_shape if input_shape is not None else (1, 28, 28)))
        require(len(shape) >= 1 and all(s >= 1 for s in shape), "input_shape", input_shape,
                "allowed: a tuple of positive sizes, e.g. (1, 28, 28)")
        self.num_ddif_samples = int(num_ddif_samples)
        self.num_seeds = int(num_seeds)
        self.tau = float(tau)
        self.min_cluster_size = int(min_cluster_size)
        self.clipping = clipping
        self.ddif_batch_size = int(ddif_batch_size)
        self.input_shape = shape
        self._device = torch.device(device)
        self._model = model_fn().to(self._device)
        self._model.eval()
        self._layout = ParamLayout.from_module(self._model)
        try:
            with torch.no_grad():
                out = self._model(torch.zeros(1, *shape, device=self._device))
        except Exception as exc:  # wrong input shape for this architecture
            raise ParameterError(
                f"input_shape={shape!r} is invalid for this model ({exc}); set context.extra['input_shape'] "
                "to (channels, height, width) of the dataset"
            ) from None
        if out.dim() != 2:
            raise ParameterError(f"input_shape={shape!r}: the model's output has shape {tuple(out.shape)}, not (1, P)")

    context_args = ("model_fn", "input_shape", "device")
    needs_classifier = True

    @staticmethod
    def check_params(num_ddif_samples: int, num_seeds: int, tau: float, min_cluster_size: int, clipping: bool,
                     ddif_batch_size: int) -> None:
        require(is_int(num_ddif_samples) and num_ddif_samples >= 1, "num_ddif_samples", num_ddif_samples,
                "allowed: an integer >= 1 (the paper uses 20000)")
        require(is_int(num_seeds) and num_seeds >= 1, "num_seeds", num_seeds, "allowed: an integer >= 1")
        require(is_finite_number(tau) and 0 < tau <= 1, "tau", tau, "allowed: 0 < tau <= 1 (the paper uses 1/3)")
        require(is_int(min_cluster_size) and min_cluster_size >= 2, "min_cluster_size", min_cluster_size,
                "allowed: an integer >= 2")
        require(is_bool(clipping), "clipping", clipping, "allowed: True, False")
        require(is_int(ddif_batch_size) and ddif_batch_size >= 1, "ddif_batch_size", ddif_batch_size,
                "allowed: an integer >= 1")

    @classmethod
    def context_values(cls, context: DefenseContext) -> dict[str, Any]:
        shape = context.extra.get("input_shape")
        if shape is None and context.server_data is not None and len(context.server_data[0]):
            shape = tuple(context.server_data[0].shape[1:])
        return {"model_fn": context.model_fn, "input_shape": shape, "device": context.device}

    # ------------------------------------------------------------------------------------------ features

    @torch.no_grad()
    def _probs(self, params: Tensor, samples: Tensor) -> Tensor:
        load_flat_params(self._model, params.to(self._device), self._layout)
        out = []
        for start in range(0, len(samples), self.ddif_batch_size):
            logits = self._model(samples[start : start + self.ddif_batch_size])
            out.append(torch.softmax(logits.to(torch.float64), dim=1))
        return torch.cat(out)

    def ddifs(self, inp: RoundInput) -> list[Tensor]:
        """``num_seeds`` tensors (n, P): DDif_i = mean_m softmax(f(s_m; W))_i / softmax(f(s_m; G))_i."""
        gen = inp.generator
        seeds = torch.randint(0, 2**62, (self.num_seeds,), generator=gen, device=gen.device).tolist()
        g = inp.global_params
        result = []
        for seed in seeds:
            sgen = torch.Generator().manual_seed(int(seed))
            samples = torch.rand(self.num_ddif_samples, *self.input_shape, generator=sgen).to(self._device)
            p_g = self._probs(g, samples).clamp_min(torch.finfo(torch.float64).tiny)
            rows = [(self._probs(g + inp.updates[i], samples) / p_g).mean(dim=0) for i in range(inp.n)]
            result.append(torch.stack(rows).cpu())
        return result

    # ------------------------------------------------------------------------------------------ round

    def _aggregate(self, inp: RoundInput) -> Aggregate:
        n = inp.n
        g = inp.global_params
        upd = inp.updates
        if inp.layout.dim != self._layout.dim:
            raise ValueError(f"deepsight: the round's layout has d={inp.layout.dim}, the model has {self._layout.dim}")
        entries = output_entries(inp.layout)
        if len(entries) < 2:
            raise ValueError(f"deepsight needs an output layer with a bias; {entries[0].name} has none")
        w_e, b_e = entries
        dw = upd[:, w_e.slice].reshape(n, w_e.shape[0], -1)
        db = upd[:, b_e.slice]

        # classification (Alg. 1): NEUPs → threshold exceedings → suspicious labels
        c = neups(dw, db)
        te = threshold_exceedings(c)
        suspicious = suspicious_labels(te).cpu().numpy()

        # clustering
        cos = cosine_distances(db).cpu().numpy()
        mcs = self.min_cluster_size
        d_cos = cluster_dissimilarity(cluster_labels(cos, "precomputed", mcs))
        d_neup = cluster_dissimilarity(cluster_labels(c.cpu().numpy(), "euclidean", mcs))
        d_ddif = np.mean(
            [cluster_dissimilarity(cluster_labels(dd.numpy(), "euclidean", mcs)) for dd in self.ddifs(inp)], axis=0
        )
        merged = (d_cos + d_neup + d_ddif) / 3.0
        np.fill_diagonal(merged, 0.0)
        raw_final = (
            np.asarray(HDBSCAN(min_cluster_size=mcs, metric="precomputed", allow_single_cluster=True,
                               copy=True).fit_predict(merged))
            if n >= mcs else np.full(n, -1)
        )
        num_noise = int((raw_final < 0).sum())
        final = raw_final.copy()
        nxt = final.max() + 1 if n else 0
        for i in np.nonzero(final < 0)[0]:
            final[i] = nxt
            nxt += 1
        accepted_np = np.zeros(n, dtype=bool)
        for lab in np.unique(final):
            members = final == lab
            if suspicious[members].mean() < self.tau:
                accepted_np[members] = True
        accepted = torch.from_numpy(accepted_np)

        # clipping to the median norm of ALL updates, FedAvg of the accepted
        train = inp.layout.trainable_mask(device=upd.device)
        buf = ~train
        norms = torch.linalg.vector_norm(upd[:, train].to(torch.float64), dim=1)
        bound = median(norms)
        new = g.clone()
        k = int(accepted.sum())
        if k > 0:
            acc = accepted.to(upd.device)
            adm = upd[acc][:, train]
            if self.clipping:
                adm = clip_updates(adm, bound, norms[acc])
            new[train] = g[train] + adm.mean(dim=0)
            if bool(buf.any()):
                new[buf] = g[buf] + upd[acc][:, buf].mean(dim=0)
        info = {
            "accepted": float(k),
            "suspicious": float(suspicious.sum()),
            "num_clusters": float(len(np.unique(final))),
            "num_noise": float(num_noise),
            "clip_bound": float(bound),
            "te_median": float(median(te.to(torch.float64))),
        }
        return Aggregate(new, accepted, info)
