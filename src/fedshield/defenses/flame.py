"""FLAME (Nguyen et al., "FLAME: Taming Backdoors in Federated Learning", USENIX Security 2022; arXiv 2101.02281).

One round of Algorithm 1 (docs/defenses.md, FLAME.1), on the (n × d) matrix at once:

* line 6, Eq. (2): pairwise cosine distances c_ij = 1 − <W_i, W_j> / (‖W_i‖ ‖W_j‖) (one matmul);
* line 7: HDBSCAN on the precomputed distances, ``min_cluster_size = n//2 + 1``, paper ``min_samples = 1``,
  ``allow_single_cluster=True`` (App. E; docs/defenses.md, FLAME.3); the admitted models are the points not
  labelled noise;
* lines 8–9: e_i = ‖W_i − G_{t−1}‖₂ and S_t = median(e_1, …, e_n) over ALL n clients (paper §4.3: "the rejected
  models are also considered"; docs/defenses.md, FLAME.5);
* line 10: W^c_i = G + Δ_i · min(1, S_t / e_i);
* line 11: G_t = unweighted mean of the admitted clipped models;
* lines 12–13: σ = λ·S_t with λ = (1/ε)·sqrt(2 ln(1.25/δ)); G*_t = G_t + N(0, σ²), once, on every trainable
  coordinate.

Batch-norm buffers (layout kind ``"buffer"``) are excluded from distances, norms and noise and aggregated by the
plain mean of the admitted clients' values (docs/defenses.md, Conventions.3).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.cluster import HDBSCAN
from torch import Tensor

from ..core.numeric import clip_updates, cosine_distances, is_bool, is_finite_number, is_int, is_number, median
from .base import Aggregate, Defense, ParameterError, RoundInput, require
from .registry import register

__all__ = [
    "FLAME",
    "cosine_distances",
    "flame_clip_bound",
    "clip_updates",
    "lambda_from_dp",
    "true_median",
    "largest_cluster",
]


def flame_clip_bound(norms: Tensor) -> Tensor:
    """S_t = Median(e_1, …, e_n) (Alg. 1 line 9), over ALL n distances e_i = ‖W_i − G‖, rejected ones included."""
    return median(norms)


def lambda_from_dp(epsilon: float, delta: float) -> float:
    """λ = (1/ε) · sqrt(2 ln(1.25/δ)) (Alg. 1 line 12; §4.3.3)."""
    return math.sqrt(2.0 * math.log(1.25 / delta)) / epsilon


def largest_cluster(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """(bool mask of the most populous label ≠ −1, number of clusters); ties go to the smallest label.

    When every label is −1 the mask is all False and the number of clusters is 0.
    """
    labels = np.asarray(labels)
    valid = labels[labels >= 0]
    if valid.size == 0:
        return np.zeros(labels.shape, dtype=bool), 0
    uniq, counts = np.unique(valid, return_counts=True)  # uniq sorted ascending → argmax picks smallest on ties
    best = uniq[int(np.argmax(counts))]
    return labels == best, int(uniq.size)


@register
class FLAME(Defense):
    """FLAME: HDBSCAN filtering of cosine distances, median-norm clipping, adaptive Gaussian noise (Alg. 1).

    Parameters
    ----------
    cluster_on:
        ``"models"`` (default): cosine distances of the flattened local models W_i, as in Alg. 1 line 6 / Eq. (2).
        ``"updates"``: of the updates Δ_i, as §4.3.1's prose says ("angular differences between all model
        updates"). Only trainable coordinates enter either way.
    min_cluster_size:
        HDBSCAN minimum cluster size; ``None`` (default) means ``n // 2 + 1`` per round (App. E, §4.3.1).
    min_samples:
        HDBSCAN ``min_samples`` in the convention of the McInnes ``hdbscan`` library the paper used (App. E:
        ``min_samples = 1``, the default). ``sklearn.cluster.HDBSCAN`` counts the point itself, so it is called
        with ``min_samples + 1`` (scikit-learn PR #28465; docs/defenses.md, FLAME.3).
    allow_single_cluster:
        must be True: with ``min_cluster_size > n/2`` the only candidate cluster is the root, and with False every
        client comes out as noise (docs/defenses.md, FLAME.3 [X]).
    all_noise_policy:
        what to do if HDBSCAN labels every client noise (the paper does not say): ``"admit_all"`` (default, as the
        reimplementations do) or ``"reject_all"`` (no client enters; G_t = G_{t−1}, plus noise if enabled).
        ``info["all_noise"]`` is 1.0 in either case.
    lam / epsilon, delta:
        the noise level λ (σ = λ·S_t). Give either ``lam`` (default 0.001, App. B.3 for image classification) or
        both ``epsilon`` and ``delta`` (λ = (1/ε)·sqrt(2 ln(1.25/δ))), not both.
    clustering, clipping, noise:
        switches for FLAME's ablation (Table 1); all True by default. With ``clustering=False`` every client is
        admitted. S_t is computed whenever clipping or noise is on.
    """

    name = "flame"
    summary = "HDBSCAN on pairwise cosine distances, median-norm clipping and adaptive Gaussian noise"
    paper = "Nguyen et al., FLAME: Taming Backdoors in Federated Learning, USENIX Security 2022 (arXiv 2101.02281)"

    def __init__(
        self,
        cluster_on: str = "models",
        min_cluster_size: int | None = None,
        min_samples: int = 1,
        allow_single_cluster: bool = True,
        all_noise_policy: str = "admit_all",
        lam: float | None = None,
        epsilon: float | None = None,
        delta: float | None = None,
        clustering: bool = True,
        clipping: bool = True,
        noise: bool = True,
    ):
        require(cluster_on in ("models", "updates"), "cluster_on", cluster_on, "allowed: 'models', 'updates'")
        require(
            min_cluster_size is None
            or (is_int(min_cluster_size) and min_cluster_size >= 2),
            "min_cluster_size", min_cluster_size, "allowed: None (n // 2 + 1) or an integer >= 2",
        )
        require(
            is_int(min_samples) and min_samples >= 1,
            "min_samples", min_samples, "allowed: an integer >= 1 (hdbscan-library convention; the paper uses 1)",
        )
        if allow_single_cluster is not True:
            raise ParameterError(
                f"allow_single_cluster={allow_single_cluster!r} is invalid; allowed: True only. With "
                "min_cluster_size > n/2 no split of the condensed tree can yield two clusters, so the root is the "
                "only candidate and allow_single_cluster=False labels every client noise (docs/defenses.md, FLAME.3)"
            )
        require(all_noise_policy in ("admit_all", "reject_all"), "all_noise_policy", all_noise_policy,
                "allowed: 'admit_all', 'reject_all'")
        for flag_name, flag in (("clustering", clustering), ("clipping", clipping), ("noise", noise)):
            require(is_bool(flag), flag_name, flag, "allowed: True, False")
        if lam is not None and (epsilon is not None or delta is not None):
            raise ParameterError(
                f"lam={lam!r} is invalid together with epsilon={epsilon!r}, delta={delta!r}; "
                "give either lam or (epsilon, delta), not both"
            )
        if epsilon is not None or delta is not None:
            require(epsilon is not None, "epsilon", epsilon, "must be given together with delta")
            require(delta is not None, "delta", delta, "must be given together with epsilon")
            require(is_finite_number(epsilon) and epsilon > 0, "epsilon", epsilon,
                    "allowed: a finite number > 0")
            require(is_number(delta) and 0 < delta < 1.25, "delta", delta,
                    "allowed: 0 < delta < 1.25 (so that ln(1.25/delta) > 0)")
            lam_value = lambda_from_dp(float(epsilon), float(delta))
        else:
            lam_value = 0.001 if lam is None else lam
            require(is_finite_number(lam_value) and lam_value >= 0, "lam", lam,
                    "allowed: a finite number >= 0")
        self.cluster_on = cluster_on
        self.min_cluster_size = min_cluster_size
        self.min_samples = int(min_samples)
        self.allow_single_cluster = True
        self.all_noise_policy = all_noise_policy
        self.epsilon = None if epsilon is None else float(epsilon)
        self.delta = None if delta is None else float(delta)
        self.lam = float(lam_value)
        self.clustering = clustering
        self.clipping = clipping
        self.noise = noise

    # ------------------------------------------------------------------------------------------ clustering

    def _cluster(self, dist: Tensor, n: int) -> tuple[Tensor, dict[str, float]]:
        """Alg. 1 line 7: HDBSCAN on the precomputed cosine distances; returns (admitted mask, info)."""
        mcs = n // 2 + 1 if self.min_cluster_size is None else self.min_cluster_size
        sk_min_samples = self.min_samples + 1  # sklearn counts the point itself (hdbscan library does not)
        info = {"min_cluster_size": float(mcs), "min_samples": float(self.min_samples)}
        if n < 2:
            # Nothing to cluster; a single client is admitted (HDBSCAN needs at least two points).
            info.update(num_clusters=1.0, all_noise=0.0)
            return torch.ones(n, dtype=torch.bool), info
        if mcs > n:
            raise ValueError(f"flame: min_cluster_size={mcs} exceeds the {n} clients of this round")
        if sk_min_samples > n:
            raise ValueError(
                f"flame: min_samples={self.min_samples} needs at least {sk_min_samples} clients, got {n}"
            )
        clusterer = HDBSCAN(
            min_cluster_size=mcs,
            min_samples=sk_min_samples,
            metric="precomputed",
            allow_single_cluster=True,
            cluster_selection_epsilon=0.0,
            copy=True,
        )
        labels = np.asarray(clusterer.fit_predict(dist.cpu().numpy().astype(np.float64)))
        mask, num_clusters = largest_cluster(labels)
        all_noise = num_clusters == 0
        if all_noise:
            mask = np.full(n, self.all_noise_policy == "admit_all")
        info.update(num_clusters=float(num_clusters), all_noise=float(all_noise))
        return torch.from_numpy(mask.astype(bool)), info

    # ------------------------------------------------------------------------------------------ round

    def _aggregate(self, inp: RoundInput) -> Aggregate:
        n = inp.n
        g = inp.global_params
        upd = inp.updates
        train = inp.layout.trainable_mask(device=upd.device)
        buf = ~train
        u_tr = upd[:, train]

        # Alg. 1 lines 6-7: filtering
        if self.clustering:
            source = (g[train].unsqueeze(0) + u_tr) if self.cluster_on == "models" else u_tr
            accepted, info = self._cluster(cosine_distances(source), n)
        else:
            accepted = torch.ones(n, dtype=torch.bool)
            info = {"num_clusters": 0.0, "all_noise": 0.0}
        accepted = accepted.to(upd.device)

        # Alg. 1 lines 8-9: e_i = ‖W_i − G‖ on trainable coordinates, S_t over all n
        norms = torch.linalg.vector_norm(u_tr.to(torch.float64), dim=1)
        need_bound = self.clipping or self.noise
        bound = flame_clip_bound(norms) if need_bound else torch.tensor(0.0, dtype=torch.float64)

        new = g.clone()
        k = int(accepted.sum())
        if k > 0:
            adm = u_tr[accepted]
            if self.clipping:
                adm = clip_updates(adm, bound, norms[accepted])  # line 10
            new[train] = g[train] + adm.mean(dim=0)  # line 11: unweighted mean of clipped models
            if bool(buf.any()):
                new[buf] = g[buf] + upd[accepted][:, buf].mean(dim=0)  # BN buffers: plain mean of admitted

        # Alg. 1 lines 12-13: σ = λ·S_t, one Gaussian draw per trainable coordinate
        sigma = self.lam * float(bound) if self.noise else 0.0
        if self.noise and sigma > 0:
            gen = inp.generator
            z = torch.randn(int(train.sum()), generator=gen, device=gen.device, dtype=new.dtype)
            new[train] = new[train] + (sigma * z).to(device=new.device, dtype=new.dtype)

        info = dict(info)
        info.update(
            accepted=float(k),
            clip_bound=float(bound),
            noise_std=float(sigma),
            lam=self.lam,
        )
        return Aggregate(new, accepted.cpu(), info)


true_median = median  # the name this module exported before the helpers moved to fedshield.core.numeric
