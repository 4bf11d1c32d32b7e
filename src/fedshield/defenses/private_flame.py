"""Private FLAME (Nguyen et al., USENIX Security 2022, §8 and App. G): FLAME run as a secure two-party
computation between two non-colluding servers, A (the aggregator) and B (an external server).

Each client splits its update into two additive shares over Z_2^64 (fixed point, ``frac_bits`` fractional bits)
and sends one to each server (A gets a 32-byte seed that expands to its share). The two server processes
(:mod:`fedshield.mpc.server`) then compute, on shares only, FLAME's cosine distances (Alg. 1 line 6), the
clustering — DBSCAN with min_pts = n//2 + 1 at a binary-searched radius, the paper's approximation of HDBSCAN
(:func:`fedshield.defenses.flame.dbscan_binary_search` is the same rule in the clear) — the norms and their
median S_t (lines 8–9), clipping (line 10), the mean of the admitted clipped updates (line 11) and the Gaussian
noise σ = λ·S_t (lines 12–13), and reveal only the new global model (and, with ``reveal_admitted``, the mask).
The protocol, its fixed-point error and what leaks are described in docs/private_flame.md (summary:
docs/defenses.md, FLAME.9).

This process plays the clients and, by default, the trusted dealer of the multiplication triples and other
correlations (``correlations: dealer``); with ``correlations: cheetah`` there is no dealer: the two servers
compute the correlations between themselves under SecretFlow SPU's CHEETAH protocol (:mod:`fedshield.mpc.cheetah`),
bit for bit the same ones, so the result is the same, at a measured cost (docs/private_flame.md, "Without a
dealer"). The servers are separate OS processes reached over TCP (loopback by default, any host:port with
``servers``), started on first use, reused across rounds and stopped by PID on :meth:`PrivateFLAME.close`, at
exit, or after any failure.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from ..core.numeric import is_bool, is_finite_number, is_int
from ..mpc.cheetah import SPU_SETUP_COMMAND, spu_python
from ..mpc.client import share_problem
from ..mpc.flame_protocol import FlameParams
from ..mpc.session import REPO_ROOT, PrivateFlameError, ServerPair
from ..mpc.transport import parse_address
from .base import Aggregate, Defense, ParameterError, RoundInput, require
from .registry import register

__all__ = ["PrivateFLAME", "PrivateFlameError"]


@register
class PrivateFLAME(Defense):
    """FLAME under 2PC in two server processes.

    Parameters
    ----------
    cluster_on: ``"models"`` (default, Alg. 1 line 6) or ``"updates"``; as in ``flame``.
    clustering: ``True`` or ``"dbscan"`` (default): DBSCAN + binary search; ``False``: admit everyone.
    clipping, noise: FLAME's ablation switches (default True).
    lam: noise level λ, σ = λ·S_t (default 0.001; 0 <= lam <= 1024).
    search_steps: binary-search steps for eps on [0, 2] (1..31, default 20), as ``flame``'s.
    frac_bits: fixed-point fractional bits f of the clients' encoding (8..20, default 16). Squared norms of the
        updates (and of the local models with ``cluster_on="models"``) must stay below 2^(58 − 2f) (2^26 for
        f = 16). A client outside (or with NaN/Inf) cannot share its update: the round runs without it, and
        ``info["unshared"]`` / ``info["unshared_reason"]`` name it; when no client can share, the round is refused
        (the previous global model is kept, ``info["refused_reason"]`` says why).
    reveal_admitted: open the admitted mask to both servers and return it (default True; the simulator's
        detection metrics need it). With False, ``accepted`` is reported as all True and
        ``info["admitted_revealed"]`` is 0.
    timeout_s: seconds any step may stay silent before the round fails naming the server and step (default 300).
    servers: ``{"A": "host:port", "B": "host:port"}`` (default both ``127.0.0.1:0``, i.e. free loopback ports).
    launch: start the two servers here (default True); False: connect to servers already running there.
    noise_entropy: ``"run"`` (default): each server's noise vector is seeded from the run's seed (reproducible
        runs; the coordinator could recompute the noise); ``"os"``: from each server's own OS entropy (and, with
        ``correlations="cheetah"``, each server's correlation seed too).
    correlations: where the multiplication triples and the other correlated randomness come from.
        ``"dealer"`` (default): this process acts as a trusted dealer (it must not collude with either server);
        ``"cheetah"``: no dealer, the two servers compute them under SPU's CHEETAH protocol (the servers then run
        in SPU's virtualenv ``.venv-spu``, created by ``make spu``; same results, slower: docs/private_flame.md).
    """

    name = "private_flame"
    summary = "FLAME as a two-party secure computation between two server processes (DBSCAN clustering)"
    paper = "Nguyen et al., FLAME: Taming Backdoors in Federated Learning, USENIX Security 2022, §8 and App. G"

    def __init__(
        self,
        cluster_on: str = "models",
        clustering: bool | str = True,
        clipping: bool = True,
        noise: bool = True,
        lam: float = 0.001,
        search_steps: int = 20,
        frac_bits: int = 16,
        reveal_admitted: bool = True,
        timeout_s: float = 300.0,
        servers: dict[str, str] | None = None,
        launch: bool = True,
        noise_entropy: str = "run",
        correlations: str = "dealer",
    ):
        require(cluster_on in ("models", "updates"), "cluster_on", cluster_on, "allowed: 'models', 'updates'")
        require(is_bool(clustering) or clustering == "dbscan", "clustering", clustering,
                "allowed: True or 'dbscan' (default), False ('hdbscan' has no 2PC version here)")
        for flag_name, flag in (("clipping", clipping), ("noise", noise), ("reveal_admitted", reveal_admitted),
                                ("launch", launch)):
            require(is_bool(flag), flag_name, flag, "allowed: True, False")
        require(is_finite_number(lam) and 0 <= lam <= 1024, "lam", lam, "allowed: a number in [0, 1024]")
        require(is_int(search_steps) and 1 <= search_steps <= 31, "search_steps", search_steps,
                "allowed: an integer in 1..31")
        require(is_int(frac_bits) and 8 <= frac_bits <= 20, "frac_bits", frac_bits, "allowed: an integer in 8..20")
        require(is_finite_number(timeout_s) and timeout_s > 0,
                "timeout_s", timeout_s, "allowed: a finite number of seconds > 0")
        if servers is not None:
            require(isinstance(servers, dict) and set(servers) == {"A", "B"}, "servers", servers,
                    "allowed: {'A': 'host:port', 'B': 'host:port'}")
            for role, addr in servers.items():
                try:
                    parse_address(addr)
                except ValueError as exc:
                    raise ParameterError(f"servers.{role}={addr!r} is invalid; {exc}") from None
        require(noise_entropy in ("run", "os"), "noise_entropy", noise_entropy, "allowed: 'run', 'os'")
        require(correlations in ("dealer", "cheetah"), "correlations", correlations, "allowed: 'dealer', 'cheetah'")
        if correlations == "cheetah" and launch and not os.path.exists(spu_python(REPO_ROOT)):
            raise ParameterError(
                f"correlations='cheetah' runs the two servers in SecretFlow SPU's virtualenv, and "
                f"{spu_python(REPO_ROOT)} does not exist; create it with `{SPU_SETUP_COMMAND}` in {REPO_ROOT} "
                f"(or point FEDSHIELD_SPU_PYTHON at an interpreter with spu 0.9.5)")
        self.correlations = correlations
        self.noise_entropy = noise_entropy
        self.cluster_on = cluster_on
        self.clustering = bool(clustering)
        self.clipping = clipping
        self.noise = noise
        self.lam = float(lam)
        self.search_steps = int(search_steps)
        self.frac_bits = int(frac_bits)
        self.reveal_admitted = reveal_admitted
        self.timeout_s = float(timeout_s)
        self.servers = dict(servers) if servers else {"A": "127.0.0.1:0", "B": "127.0.0.1:0"}
        self.launch = launch
        self._pair: ServerPair | None = None

    @property
    def params(self) -> FlameParams:
        return FlameParams(self.frac_bits, self.cluster_on, self.clustering, self.clipping, self.noise,
                           self.lam, self.search_steps, self.reveal_admitted)

    @property
    def server_pair(self) -> ServerPair:
        """The two servers (started on first use)."""
        if self._pair is None:
            self._pair = ServerPair(self.servers, self.launch, self.timeout_s, correlations=self.correlations)
        self._pair.start()
        return self._pair

    def close(self) -> None:
        """Stop the two server processes (they are restarted by the next round)."""
        if self._pair is not None:
            self._pair.close()
            self._pair = None

    def __enter__(self) -> "PrivateFLAME":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:  # checkpoints hold the parameters, never processes or sockets
        state = dict(self.__dict__)
        state["_pair"] = None
        return state

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def _aggregate(self, inp: RoundInput) -> Aggregate:
        n, d = inp.updates.shape
        train = inp.layout.trainable_mask().cpu().numpy()
        order = np.concatenate([np.flatnonzero(train), np.flatnonzero(~train)])
        d_tr = int(train.sum())
        if d_tr == 0:
            raise ValueError("private_flame: the model has no trainable coordinates")
        g = inp.global_params.detach().cpu().to(torch.float64).numpy()
        u = inp.updates.detach().cpu().to(torch.float64).numpy()[:, order]
        seed = int(torch.randint(0, 2**62, (1,), generator=inp.generator, device=inp.generator.device))
        # Client side: an update that fixed point cannot represent is not sent (the client refuses to share it);
        # the round runs on the others, as the simulator drops non-finite updates, and the metrics name them.
        model_tr = g[train] if self.cluster_on == "models" else None
        problems = {i: p for i in range(n) if (p := share_problem(u[i], self.frac_bits, d_tr, model_tr)) is not None}
        sent = np.array([i not in problems for i in range(n)])
        unshared: dict[str, Any] = {}
        if problems:
            unshared = {"unshared": float(len(problems)), "unshared_reason": "; ".join(
                f"client {int(inp.client_ids[i])}: {p}" for i, p in problems.items()) + "; not shared"}
        if not sent.any():
            reason = f"private_flame: no client's update can be shared in round {inp.round}; kept the previous " \
                     f"global model ({unshared['unshared_reason']})"
            return Aggregate(inp.global_params.clone(), torch.zeros(n, dtype=torch.bool),
                             {**unshared, "accepted": 0.0, "refused": 1.0, "refused_reason": reason})
        res = self.server_pair.run_round(u[sent], g[train], d_tr, self.params, seed,
                                         noise_from_os=self.noise_entropy == "os",
                                         corr_seeds_from_os=self.noise_entropy == "os")
        update = np.empty(d)
        update[order] = res.update
        new = torch.from_numpy(g + update).to(inp.global_params.dtype)
        accepted = torch.from_numpy(sent.copy())
        if res.mask is not None:
            accepted[torch.from_numpy(sent)] = torch.from_numpy(res.mask.astype(bool))
        info: dict[str, Any] = {
            **unshared,
            "accepted": float(accepted.sum()),
            "admitted_revealed": float(res.mask is not None),
            "lam": self.lam,
            "mpc_exchanges": float(res.exchanges),
            "mpc_mbytes_A_to_B": res.bytes_sent["A_to_B"] / 1e6,
            "mpc_mbytes_B_to_A": res.bytes_sent["B_to_A"] / 1e6,
        }
        info.update({f"mpc_s_{k}": float(v) for k, v in res.seconds.items()})
        if res.correlations:  # cheetah: what computing the correlations cost (SPU's link bytes, CPU seconds)
            info.update({"mpc_mbytes_spu_A_to_B": res.correlations["spu_bytes_A"] / 1e6,
                         "mpc_mbytes_spu_B_to_A": res.correlations["spu_bytes_B"] / 1e6,
                         "mpc_spu_cpu_s_A": res.correlations["spu_cpu_seconds_A"],
                         "mpc_spu_cpu_s_B": res.correlations["spu_cpu_seconds_B"]})
        return Aggregate(new, accepted, info)

