"""A SYNTHETIC network-traffic dataset (``data.dataset: synthetic_traffic``), for offline demos and tests.

Nothing here was captured on a network: every number measured on it must say "synthetic". It imitates the
shape of flow-feature datasets (UNSW-NB15, ToN-IoT): per flow, heavy-tailed counts and sizes, a rate that is
+inf for zero-duration flows (exercising the non-finite rule), TTLs, flag ratios, a payload entropy, and two
categoricals (``proto``, ``service``).

* **Families**: ``benign`` and five attacks with distinct feature distributions (:data:`FAMILIES`):
  ``scan`` (many destination ports, tiny flows, many RSTs), ``dos_flood`` (very high packet rate, SYN-heavy,
  no replies), ``bruteforce`` (many short login attempts to one service), ``botnet_c2`` (small, regular,
  long-lived beacons: close to benign, the hardest), ``exfiltration`` (large uploads, high entropy).
* **Devices**: ``num_devices`` IoT devices, each with its own benign profile: an offset drawn per device
  N(0, ``drift``²) in log space on every continuous feature (a camera uploads more than a thermostat), which
  its attack traffic shares at half strength; TTL and service mix also differ per device. Each device's
  attack mix is Dirichlet(1)-distributed over the families, attacks making ``attack_share`` of its flows.
* **Overlap**: every continuous feature has a within-family spread of about one unit in log space, so the
  families overlap and a classifier does not reach 100 %.

Deterministic: everything comes from ``numpy.random.default_rng(seed)`` streams spawned in a fixed order.
Returns a :class:`~.table.RawTraffic` that goes through the same preprocessing as the real datasets.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from ...core.numeric import is_finite_number, is_int, is_number
from ...core.params import require
from .table import BENIGN, RawTraffic

__all__ = ["FAMILIES", "FEATURES", "make_synthetic_traffic"]


def _pick(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One index per row of ``probs`` (n, k), row i drawn with probabilities probs[i]."""
    u = rng.random(probs.shape[0])[:, None]
    return np.minimum((u > np.cumsum(probs, axis=1)).sum(axis=1), probs.shape[1] - 1)

FAMILIES: Final = (BENIGN, "scan", "dos_flood", "bruteforce", "botnet_c2", "exfiltration")
# continuous features generated in log space: log1p of the raw value
_LOG_FEATURES: Final = ("dur", "spkts", "dpkts", "sbytes", "dbytes", "iat_mean", "iat_std", "dst_ports")
FEATURES: Final = _LOG_FEATURES + ("rate", "sttl", "dttl", "syn_ratio", "rst_ratio", "payload_entropy")

# per family: log-space means of _LOG_FEATURES, then logits of syn_ratio, rst_ratio, entropy/8
_MEANS: Final = {
    BENIGN:         [1.2, 2.8, 2.8, 7.0, 8.0, -0.5, -0.8, 0.3,   -2.0, -2.5, 0.8],
    "scan":         [0.1, 0.9, 0.5, 4.0, 3.0, -3.0, -3.0, 3.5,    1.0,  1.0, -1.0],
    "dos_flood":    [2.0, 6.0, 0.6, 9.5, 3.5, -5.0, -5.0, 0.3,    2.5, -1.5, -0.5],
    "bruteforce":   [0.6, 2.4, 2.2, 6.0, 6.2, -1.5, -2.0, 0.2,   -0.8, -1.0, 0.2],
    "botnet_c2":    [2.4, 2.0, 1.9, 5.8, 6.1, 0.8, -2.8, 0.2,    -1.6, -2.2, 0.4],
    "exfiltration": [3.0, 5.0, 3.0, 11.5, 6.5, -1.5, -1.2, 0.1,  -1.8, -2.5, 2.2],
}
_SPREAD: Final = 0.9  # within-family std in log space / logit space
_PROTO: Final = ("tcp", "udp", "icmp")
_PROTO_P: Final = {
    BENIGN: (0.70, 0.28, 0.02), "scan": (0.6, 0.2, 0.2), "dos_flood": (0.5, 0.4, 0.1),
    "bruteforce": (0.97, 0.03, 0.0), "botnet_c2": (0.75, 0.25, 0.0), "exfiltration": (0.9, 0.1, 0.0),
}
_SERVICES: Final = ("http", "dns", "mqtt", "ssh", "-")
_SERVICE_P: Final = {
    "scan": (0.1, 0.1, 0.1, 0.1, 0.6), "dos_flood": (0.5, 0.2, 0.1, 0.0, 0.2), "bruteforce": (0.2, 0.0, 0.1, 0.7, 0.0),
    "botnet_c2": (0.5, 0.3, 0.15, 0.0, 0.05), "exfiltration": (0.6, 0.2, 0.1, 0.1, 0.0),
}
_TTLS: Final = (64.0, 128.0, 255.0)


def make_synthetic_traffic(
    num_devices: int = 10,
    flows_per_device: int = 3000,
    attack_share: float = 0.3,
    drift: float = 0.6,
    zero_duration_share: float = 0.02,
    seed: int = 0,
) -> RawTraffic:
    """Generate the dataset (see the module docstring); ``device`` ids are 0..num_devices-1."""
    require(is_int(num_devices) and num_devices >= 1, "num_devices", num_devices, "must be an integer >= 1")
    require(is_int(flows_per_device) and flows_per_device >= 10, "flows_per_device", flows_per_device,
            "must be an integer >= 10")
    require(is_number(attack_share) and 0 < attack_share < 1, "attack_share", attack_share, "must be in (0, 1)")
    require(is_finite_number(drift) and drift >= 0, "drift", drift, "must be a finite number >= 0")
    require(is_number(zero_duration_share) and 0 <= zero_duration_share < 1, "zero_duration_share",
            zero_duration_share, "must be in [0, 1)")
    dev_ss, flow_ss = np.random.SeedSequence([seed, 0x7AFF1C]).spawn(2)
    dev_rng = np.random.default_rng(dev_ss)
    n_cont = len(_MEANS[BENIGN])
    offsets = dev_rng.normal(0.0, drift, size=(num_devices, n_cont))
    offsets[:, len(_LOG_FEATURES):] *= 0.5  # flag ratios and entropy drift less than volumes
    ttl_p = dev_rng.dirichlet(np.full(len(_TTLS), 1.0), size=num_devices)
    service_p = dev_rng.dirichlet(np.array([4.0, 3.0, 3.0, 0.5, 1.0]), size=num_devices)
    attack_mix = dev_rng.dirichlet(np.ones(len(FAMILIES) - 1), size=num_devices)

    rng = np.random.default_rng(flow_ss)
    numeric, family, device, proto, service = [], [], [], [], []
    for d in range(num_devices):
        probs = np.concatenate([[1 - attack_share], attack_share * attack_mix[d]])
        fam = rng.choice(len(FAMILIES), size=flows_per_device, p=probs)
        means = np.array([_MEANS[FAMILIES[f]] for f in fam])
        weight = np.where(fam == 0, 1.0, 0.5)[:, None]
        z = means + weight * offsets[d] + rng.normal(0.0, _SPREAD, size=means.shape)
        logs = np.maximum(z[:, : len(_LOG_FEATURES)], 0.0)
        raw = np.expm1(logs)
        raw[:, [1, 2, 7]] = np.rint(raw[:, [1, 2, 7]])  # packet and port counts are integers
        raw[:, 1] = np.maximum(raw[:, 1], 1.0)
        raw[:, 7] = np.maximum(raw[:, 7], 1.0)
        dur = raw[:, 0]
        dur[rng.random(flows_per_device) < zero_duration_share] = 0.0
        with np.errstate(divide="ignore"):
            rate = (raw[:, 1] + raw[:, 2]) / dur  # +inf where dur == 0, as flow exporters write it
        ttl_rows = np.where((fam == 0)[:, None], ttl_p[d][None, :], np.array([[0.2, 0.2, 0.6]]))
        sttl = np.array(_TTLS)[_pick(rng, ttl_rows)]
        dttl = np.where(raw[:, 2] > 0, sttl, 0.0)
        logits = z[:, len(_LOG_FEATURES):]
        ratios = 1.0 / (1.0 + np.exp(-logits))
        numeric.append(np.column_stack([raw, rate, sttl, dttl, ratios[:, 0], ratios[:, 1], 8.0 * ratios[:, 2]]))
        family.append(np.array(FAMILIES, dtype=object)[fam])
        device.append(np.full(flows_per_device, d, dtype=np.int64))
        proto_p = np.array([_PROTO_P[f] for f in FAMILIES])[fam]
        proto.append(np.array(_PROTO, dtype=object)[_pick(rng, proto_p)])
        serv_table = np.array([service_p[d]] + [_SERVICE_P[f] for f in FAMILIES[1:]])
        service.append(np.array(_SERVICES, dtype=object)[_pick(rng, serv_table[fam])])
    n = num_devices * flows_per_device
    return RawTraffic(
        name="synthetic_traffic",
        numeric=np.concatenate(numeric),
        numeric_names=FEATURES,
        categorical={"proto": np.concatenate(proto), "service": np.concatenate(service)},
        family=np.concatenate(family),
        device=np.concatenate(device),
        device_names=tuple(f"device_{d}" for d in range(num_devices)),
        order=np.arange(n, dtype=np.float64),
    )
