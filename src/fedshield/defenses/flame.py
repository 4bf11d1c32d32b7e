"""FLAME (Nguyen et al., "FLAME: Taming Backdoors in Federated Learning", USENIX Security 2022; arXiv 2101.02281).

One round of Algorithm 1 (docs/defenses.md, FLAME.1), on the (n × d) matrix at once:

* line 6, Eq. (2): pairwise cosine distances c_ij = 1 − <W_i, W_j> / (‖W_i‖ ‖W_j‖) (one symmetric product of the
  updates, ``fedshield.core.numeric.cosine_distances`` with a float32 Gram);
* line 7: HDBSCAN on the precomputed distances, ``min_cluster_size = n//2 + 1``, paper ``min_samples = 1``,
  ``allow_single_cluster=True`` (App. E; docs/defenses.md, FLAME.3); the admitted models are the points not
  labelled noise. The clustering follows the McInnes ``hdbscan`` library the paper used
  (:func:`hdbscan_mutual_reachability`: its ``min_samples`` and ``alpha`` conventions), run through
  ``sklearn.cluster.HDBSCAN``;
* lines 8–9: e_i = ‖W_i − G_{t−1}‖₂ and S_t = median(e_1, …, e_n) over ALL n clients (paper §4.3: "the rejected
  models are also considered"; docs/defenses.md, FLAME.5);
* line 10: W^c_i = G + Δ_i · min(1, S_t / e_i);
* line 11: G_t = unweighted mean of the admitted clipped models;
* lines 12–13: σ = λ·S_t with λ = (1/ε)·sqrt(2 ln(1.25/δ)); G*_t = G_t + N(0, σ²), once, on every trainable
  coordinate.

Batch-norm buffers (layout kind ``"buffer"``) are excluded from distances, norms and noise and aggregated by the
plain mean of the admitted clients' values (docs/defenses.md, Conventions.3).

``variant="fedward_code"`` is FLAME as the Fedward authors ran it for their Table I (repository zkya/FEDWARD,
``trainer/filter.py`` lines 51-76 and 100-105, ``main_flame.py`` lines 119-151, ``utils/options.py`` line 60;
docs/results/fedward_table1_readings.md): cosine distances of the full local models, ``hdbscan.HDBSCAN(
min_cluster_size=n//2+1, allow_single_cluster=True, alpha=0.9, metric="precomputed")`` with ``min_samples`` left
at the library default (= ``min_cluster_size``), the largest cluster admitted, S_t the median over all n, noise
std λ·S_t with λ = 1e-4. The authors filter only in attack rounds; that is the experiment's schedule, not a
FLAME parameter (config key ``defense.from_round``, :mod:`fedshield.defenses.schedule`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from sklearn.cluster import HDBSCAN
from torch import Tensor

from ..core.numeric import (
    clip_updates,
    cosine_distances,
    is_bool,
    is_finite_number,
    is_int,
    is_number,
    median,
    row_norms,
)
from .base import Aggregate, Defense, DefenseContext, ParameterError, RoundInput, require
from .registry import register

__all__ = [
    "FLAME",
    "DEFAULT_LAMBDA",
    "cosine_distances",
    "flame_clip_bound",
    "clip_updates",
    "lambda_from_dp",
    "true_median",
    "largest_cluster",
    "hdbscan_mutual_reachability",
    "hdbscan_labels",
    "FLAME_VARIANTS",
    "dbscan_binary_search",
]

# variant → defaults of min_samples (hdbscan-library convention), hdbscan alpha and λ;
# min_samples None means "= min_cluster_size" (the hdbscan library's default, hdbscan_.py: `if min_samples is None`)
FLAME_VARIANTS = {
    "paper": {"min_samples": 1, "hdbscan_alpha": 1.0, "lam": None},  # λ: DEFAULT_LAMBDA of the domain
    "fedward_code": {"min_samples": None, "hdbscan_alpha": 0.9, "lam": 1e-4},
}


DEFAULT_LAMBDA: dict[str, float] = {"image": 0.001, "traffic": 0.01}  # App. B.3: λ per domain (NIDS: 0.01)


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


def hdbscan_mutual_reachability(dist: np.ndarray, min_samples: int, alpha: float = 1.0) -> np.ndarray:
    """The mutual reachability matrix exactly as the McInnes ``hdbscan`` library computes it for a precomputed
    distance matrix (``_hdbscan_reachability.pyx``, ``mutual_reachability``):

    * core_i = the ``min_samples``-th smallest distance of point i **not counting itself** (the sorted column at
      index ``min_samples``; ``min_samples`` is capped at n − 1 as the library does);
    * MR_ij = max(d_ij / alpha, core_i, core_j) for i ≠ j; the core distances are taken **before** the division
      by ``alpha``, so ``alpha`` < 1 lengthens the pairwise distances relative to the core distances.

    ``sklearn.cluster.HDBSCAN`` differs on both points: its ``min_samples`` counts the point itself (hdbscan
    ``k`` = sklearn ``k + 1``) and it divides the whole matrix by ``alpha`` before taking core distances, so
    there ``alpha`` only rescales every distance and never changes the labels. The diagonal is returned as 0.
    """
    d = np.asarray(dist, dtype=np.float64)
    n = d.shape[0]
    k = min(n - 1, int(min_samples))
    core = np.sort(d, axis=0)[k]
    mr = np.maximum(np.maximum(d / float(alpha), core[None, :]), core[:, None])
    np.fill_diagonal(mr, 0.0)
    return mr


def hdbscan_labels(dist: np.ndarray, min_cluster_size: int, min_samples: int, alpha: float = 1.0) -> np.ndarray:
    """Labels of ``hdbscan.HDBSCAN(min_cluster_size, min_samples, alpha, metric="precomputed",
    allow_single_cluster=True)`` computed with scikit-learn: :func:`hdbscan_mutual_reachability`, then
    ``sklearn.cluster.HDBSCAN`` with ``min_samples=1`` on that matrix (its core distances are then 0, so it builds
    the single-linkage tree of the given matrix; the condensed tree and the single-cluster labelling are the same
    algorithm in both libraries). Checked against hdbscan 0.8.44 on 1,600 random 10-client matrices (docs)."""
    mr = hdbscan_mutual_reachability(dist, min_samples, alpha)
    clusterer = HDBSCAN(
        min_cluster_size=min_cluster_size,
        min_samples=1,
        metric="precomputed",
        allow_single_cluster=True,
        cluster_selection_epsilon=0.0,
        copy=True,
    )
    return np.asarray(clusterer.fit_predict(mr))


def dbscan_binary_search(dist: np.ndarray, min_pts: int, steps: int) -> tuple[np.ndarray, float, dict[str, float]]:
    """Private FLAME's clustering rule in the clear (paper §8 / App. G: DBSCAN plus a binary search for eps).

    1. eps is searched on the grid eps(t) = 2t / 2^steps, t = 0..2^steps: t* is the smallest t at which some
       client is a core point, i.e. has at least ``min_pts`` clients (itself included) at distance <= eps(t).
       At t = 2^steps (eps = 2) every client is a core point, so t* exists. The search is the binary one the
       2PC version runs obliviously: start at t = 2^steps and, for b = steps-1 .. 0, move to t − 2^b when a
       core point exists there.
    2. DBSCAN at eps = eps(t*) in the original definition (Ester et al. 1996): clusters are the connected
       components of core points joined by eps-edges, each with every point within eps of one of its cores
       (a border point may belong to two clusters).
    3. The admitted mask is the largest cluster; a tie goes to the cluster holding the smallest core index.

    Returns (mask, eps, info). ``dist`` is an (n, n) symmetric distance matrix with zero diagonal.
    """
    d = np.asarray(dist, dtype=np.float64)
    n = d.shape[0]
    if d.shape != (n, n):
        raise ValueError(f"dbscan_binary_search: dist must be square, got shape {d.shape}")
    if not 1 <= min_pts <= n:
        raise ValueError(f"dbscan_binary_search: min_pts={min_pts} must be in 1..{n}")

    def core_at(t: int) -> tuple[np.ndarray, np.ndarray]:
        nb = d <= 2.0 * t / 2**steps
        np.fill_diagonal(nb, True)
        return nb, nb.sum(axis=1) >= min_pts

    t = 2**steps
    for b in reversed(range(steps)):
        if core_at(t - 2**b)[1].any():
            t -= 2**b
    nb, core = core_at(t)
    reach = core[:, None] & core[None, :] & nb
    for _ in range(max(1, math.ceil(math.log2(max(n - 1, 1))))):
        reach = (reach.astype(np.int64) @ reach.astype(np.int64)) > 0
    members = (reach.astype(np.int64) @ (core[:, None] & nb).astype(np.int64)) > 0
    sizes = members.sum(axis=1)
    best = int(np.argmax(sizes))  # first maximum: the smallest core index
    eps = 2.0 * t / 2**steps
    info = {"dbscan_eps": eps, "num_core": float(core.sum()), "num_clusters": float(len({tuple(r) for r in members[core]}))}
    return members[best].copy(), eps, info


@register
class FLAME(Defense):
    """FLAME: HDBSCAN filtering of cosine distances, median-norm clipping, adaptive Gaussian noise (Alg. 1).

    Parameters
    ----------
    variant:
        ``"paper"`` (default): FLAME's paper (App. E: ``min_samples = 1``; App. B.3: λ = 0.001). ``"fedward_code"``:
        FLAME as in the Fedward authors' ``main_flame.py`` / ``trainer/filter.py`` (``min_samples`` = the hdbscan
        default = ``min_cluster_size``, ``hdbscan_alpha = 0.9``, λ = 1e-4; see the module docstring). The variant
        only sets the defaults of ``min_samples``, ``hdbscan_alpha`` and ``lam``; a value given explicitly wins.
    cluster_on:
        ``"models"`` (default): cosine distances of the flattened local models W_i, as in Alg. 1 line 6 / Eq. (2).
        ``"updates"``: of the updates Δ_i, as §4.3.1's prose says ("angular differences between all model
        updates"). Only trainable coordinates enter either way.
    min_cluster_size:
        HDBSCAN minimum cluster size; ``None`` (default) means ``n // 2 + 1`` per round (App. E, §4.3.1).
    min_samples:
        HDBSCAN ``min_samples`` in the convention of the McInnes ``hdbscan`` library the paper used (the point
        itself not counted; scikit-learn counts it, PR #28465; docs/defenses.md, FLAME.3). ``None`` (default): the
        variant's value, 1 for ``"paper"`` (App. E), ``min_cluster_size`` for ``"fedward_code"`` (the library's
        default, which the Fedward code leaves in place).
    hdbscan_alpha:
        the hdbscan library's ``alpha`` (pairwise distances divided by it, core distances not; see
        :func:`hdbscan_mutual_reachability`). ``None`` (default): 1.0 for ``"paper"``, 0.9 for ``"fedward_code"``.
    allow_single_cluster:
        must be True: with ``min_cluster_size > n/2`` the only candidate cluster is the root, and with False every
        client comes out as noise (docs/defenses.md, FLAME.3 [X]).
    all_noise_policy:
        what to do if HDBSCAN labels every client noise (the paper does not say): ``"admit_all"`` (default, as the
        reimplementations do) or ``"reject_all"`` (no client enters; G_t = G_{t−1}, plus noise if enabled).
        ``info["all_noise"]`` is 1.0 in either case.
    lam / epsilon, delta:
        the noise level λ (σ = λ·S_t). Give either ``lam`` (default: 1e-4 for ``variant="fedward_code"``; otherwise
        :data:`DEFAULT_LAMBDA` of the ``domain``: 0.001 for image classification, 0.01 for network intrusion
        detection, App. B.3) or both ``epsilon`` and ``delta`` (λ = (1/ε)·sqrt(2 ln(1.25/δ))), not both.
    clustering:
        ``True`` or ``"hdbscan"`` (default): HDBSCAN as above. ``"dbscan"``: the rule of Private FLAME (§8,
        App. G; docs/defenses.md, FLAME.9), DBSCAN with ``min_pts = n//2 + 1`` at the radius found by a binary
        search of ``search_steps`` steps (:func:`dbscan_binary_search`); the plaintext twin of ``private_flame``.
        ``False``: every client is admitted (the ablation of Table 1).
    search_steps:
        binary-search steps for DBSCAN's eps on [0, 2] (``clustering="dbscan"`` only; default 20, grid 2/2^20).
    clipping, noise:
        switches for FLAME's ablation (Table 1); both True by default. S_t is computed whenever clipping or noise is on.
    domain:
        not a config parameter: the experiment's domain (``"image"`` or ``"traffic"``), from the
        :class:`DefenseContext` (``context_args``); it only picks λ's default.
    """

    name = "flame"
    context_args = ("domain",)
    summary = "HDBSCAN on pairwise cosine distances, median-norm clipping and adaptive Gaussian noise"
    paper = "Nguyen et al., FLAME: Taming Backdoors in Federated Learning, USENIX Security 2022 (arXiv 2101.02281)"

    def __init__(
        self,
        variant: str = "paper",
        cluster_on: str = "models",
        min_cluster_size: int | None = None,
        min_samples: int | None = None,
        hdbscan_alpha: float | None = None,
        allow_single_cluster: bool = True,
        all_noise_policy: str = "admit_all",
        lam: float | None = None,
        epsilon: float | None = None,
        delta: float | None = None,
        clustering: bool | str = True,
        clipping: bool = True,
        noise: bool = True,
        domain: str = "image",
        search_steps: int = 20,
    ):
        require(isinstance(variant, str) and variant in FLAME_VARIANTS, "variant", variant,
                f"allowed: {', '.join(map(repr, FLAME_VARIANTS))}")
        defaults = FLAME_VARIANTS[variant]
        require(domain in DEFAULT_LAMBDA, "domain", domain, f"allowed: {sorted(DEFAULT_LAMBDA)}")
        require(cluster_on in ("models", "updates"), "cluster_on", cluster_on, "allowed: 'models', 'updates'")
        require(
            min_cluster_size is None
            or (is_int(min_cluster_size) and min_cluster_size >= 2),
            "min_cluster_size", min_cluster_size, "allowed: None (n // 2 + 1) or an integer >= 2",
        )
        require(
            min_samples is None or (is_int(min_samples) and min_samples >= 1),
            "min_samples", min_samples,
            "allowed: None (the variant's value) or an integer >= 1 (hdbscan-library convention; the paper uses 1)",
        )
        require(
            hdbscan_alpha is None or (is_finite_number(hdbscan_alpha) and hdbscan_alpha > 0),
            "hdbscan_alpha", hdbscan_alpha, "allowed: None (the variant's value) or a finite number > 0",
        )
        if allow_single_cluster is not True:
            raise ParameterError(
                f"allow_single_cluster={allow_single_cluster!r} is invalid; allowed: True only. With "
                "min_cluster_size > n/2 no split of the condensed tree can yield two clusters, so the root is the "
                "only candidate and allow_single_cluster=False labels every client noise (docs/defenses.md, FLAME.3)"
            )
        require(all_noise_policy in ("admit_all", "reject_all"), "all_noise_policy", all_noise_policy,
                "allowed: 'admit_all', 'reject_all'")
        require(is_bool(clustering) or clustering in ("hdbscan", "dbscan"), "clustering", clustering,
                "allowed: True or 'hdbscan' (default), 'dbscan', False")
        require(is_int(search_steps) and 1 <= search_steps <= 31, "search_steps", search_steps,
                "allowed: an integer in 1..31")
        for flag_name, flag in (("clipping", clipping), ("noise", noise)):
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
            default_lam = DEFAULT_LAMBDA[domain] if defaults["lam"] is None else defaults["lam"]
            lam_value = default_lam if lam is None else lam
            require(is_finite_number(lam_value) and lam_value >= 0, "lam", lam,
                    "allowed: a finite number >= 0")
        self.variant = variant
        self.cluster_on = cluster_on
        self.min_cluster_size = min_cluster_size
        # None = min_cluster_size of the round (only possible for fedward_code or an explicit None default)
        self.min_samples = defaults["min_samples"] if min_samples is None else int(min_samples)
        self.hdbscan_alpha = float(defaults["hdbscan_alpha"] if hdbscan_alpha is None else hdbscan_alpha)
        self.allow_single_cluster = True
        self.all_noise_policy = all_noise_policy
        self.epsilon = None if epsilon is None else float(epsilon)
        self.delta = None if delta is None else float(delta)
        self.lam = float(lam_value)
        self.clustering = clustering
        self.search_steps = int(search_steps)
        self.clipping = clipping
        self.noise = noise

    @classmethod
    def context_values(cls, context: DefenseContext) -> dict[str, Any]:
        """The experiment's domain (``context.extra["domain"]``: ``"image"`` or ``"traffic"``), which picks λ's
        default."""
        return {"domain": context.extra.get("domain", "image")}

    # ------------------------------------------------------------------------------------------ clustering

    def _cluster(self, dist: Tensor, n: int) -> tuple[Tensor, dict[str, float]]:
        """Alg. 1 line 7: HDBSCAN on the precomputed cosine distances; returns (admitted mask, info)."""
        mcs = n // 2 + 1 if self.min_cluster_size is None else self.min_cluster_size
        min_samples = mcs if self.min_samples is None else self.min_samples
        info = {"min_cluster_size": float(mcs), "min_samples": float(min_samples), "hdbscan_alpha": self.hdbscan_alpha}
        if n < 2:
            # Nothing to cluster; a single client is admitted (HDBSCAN needs at least two points).
            info.update(num_clusters=1.0, all_noise=0.0)
            return torch.ones(n, dtype=torch.bool), info
        if mcs > n:
            raise ValueError(f"flame: min_cluster_size={mcs} exceeds the {n} clients of this round")
        labels = hdbscan_labels(dist.cpu().numpy(), mcs, min_samples, self.hdbscan_alpha)
        mask, num_clusters = largest_cluster(labels)
        all_noise = num_clusters == 0
        if all_noise:
            mask = np.full(n, self.all_noise_policy == "admit_all")
        info.update(num_clusters=float(num_clusters), all_noise=float(all_noise))
        return torch.from_numpy(mask.astype(bool)), info

    # ------------------------------------------------------------------------------------------ round

    def min_clients(self) -> int:
        """An explicit HDBSCAN ``min_cluster_size`` needs that many clients (the default n//2 + 1 fits any n)."""
        if self.clustering is True and self.min_cluster_size is not None:
            return int(self.min_cluster_size)
        return 1

    def _aggregate(self, inp: RoundInput) -> Aggregate:
        n = inp.n
        g = inp.global_params
        upd = inp.updates
        train = inp.layout.trainable_mask(device=upd.device)
        buf = ~train
        u_tr = upd if bool(train.all()) else upd[:, train]  # no (n, d) copy when every coordinate trains

        # Alg. 1 lines 6-7: filtering
        origin = g[train] if self.cluster_on == "models" else None
        if self.clustering == "dbscan":
            # float64 distances: the plaintext twin of private_flame is compared with it exactly (FLAME.9)
            mask_np, _, info = dbscan_binary_search(cosine_distances(u_tr, origin).cpu().numpy(), n // 2 + 1,
                                                    self.search_steps)
            accepted, info = torch.from_numpy(mask_np), {**info, "all_noise": 0.0}
        elif self.clustering:
            # float32 Gram, float64 model terms (docs/scaling.md; tests/test_flame_distances.py)
            accepted, info = self._cluster(cosine_distances(u_tr, origin, gram_dtype=torch.float32), n)
        else:
            accepted = torch.ones(n, dtype=torch.bool)
            info = {"num_clusters": 0.0, "all_noise": 0.0}
        accepted = accepted.to(upd.device)

        # Alg. 1 lines 8-9: e_i = ‖W_i − G‖ on trainable coordinates, S_t over all n
        norms = row_norms(u_tr)  # float64 norms from one float32 pass, no (n, d) float64 copy
        need_bound = self.clipping or self.noise
        bound = flame_clip_bound(norms) if need_bound else torch.tensor(0.0, dtype=torch.float64)

        new = g.clone()
        k = int(accepted.sum())
        if k > 0:
            # lines 10-11: the unweighted mean of the admitted clipped models, G + Σ_admitted γ_i Δ_i / k, as one
            # matrix-vector product (no copy of the admitted rows); γ_i = min(1, S_t / e_i) as in clip_updates
            gamma = clip_updates(torch.ones(n, 1, dtype=torch.float64, device=norms.device), bound, norms)[:, 0]
            weights = torch.where(accepted, gamma if self.clipping else torch.ones_like(gamma), 0.0) / k
            new[train] = g[train] + torch.mv(u_tr.T, weights.to(u_tr.dtype))
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
