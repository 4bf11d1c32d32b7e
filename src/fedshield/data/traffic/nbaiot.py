"""N-BaIoT (Meidan et al., "N-BaIoT: Network-based detection of IoT botnet attacks using deep autoencoders",
IEEE Pervasive Computing 2018).

Published at the UCI repository (https://archive.ics.uci.edu/dataset/442), one folder per device (the nine
of :data:`DEVICES`), each with ``benign_traffic.csv`` and the archives ``gafgyt_attacks.rar`` and
``mirai_attacks.rar``; unpack them in place. ``data.root`` is the folder holding the device folders:

    <root>/Danmini_Doorbell/benign_traffic.csv
    <root>/Danmini_Doorbell/gafgyt_attacks/{combo,junk,scan,tcp,udp}.csv
    <root>/Danmini_Doorbell/mirai_attacks/{ack,scan,syn,udp,udpplain}.csv
    ...  (Ennio_Doorbell and Samsung_SNH_1011_N_Webcam have no Mirai files)

The flat layout of the widely used Kaggle copy is read too: ``<root>/<k>.benign.csv``,
``<k>.gafgyt.<attack>.csv``, ``<k>.mirai.<attack>.csv`` with k = 1..9 the devices in :data:`DEVICES` order.

Every file has the 115-column header :data:`COLUMNS` (no label column): statistics of packet streams over
five decay windows λ ∈ {5, 3, 1, 0.1, 0.01} (``L5`` … ``L0.01``) for the stream aggregations ``MI_dir``
(source MAC-IP: weight, mean, variance), ``H`` (source IP), ``HH`` (channel: weight, mean, std, magnitude,
radius, covariance, pcc), ``HH_jit`` (channel jitter) and ``HpHp`` (socket). The family of a row is its file
(``mirai_ack``, ``gafgyt_scan``, …; ``benign``) and its device the folder: the natural federated split is one
client per device (``data.partition: by_device``). No train/test pair is published: the preprocessing's
seeded split applies.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

import numpy as np

from ...core.errors import DataNotFoundError
from .table import BENIGN, RawTraffic, concat_raw, read_csv_strings, to_float

__all__ = ["COLUMNS", "DEVICES", "GAFGYT", "MIRAI", "read_nbaiot", "find_nbaiot"]

_WINDOWS: Final = ("L5", "L3", "L1", "L0.1", "L0.01")
_STATS_1D: Final = ("weight", "mean", "variance")
_STATS_2D: Final = ("weight", "mean", "std", "magnitude", "radius", "covariance", "pcc")


def _block(prefix: str, stats: tuple[str, ...]) -> list[str]:
    return [f"{prefix}_{w}_{s}" for w in _WINDOWS for s in stats]


COLUMNS: Final = tuple(
    _block("MI_dir", _STATS_1D) + _block("H", _STATS_1D) + _block("HH", _STATS_2D)
    + _block("HH_jit", _STATS_1D) + _block("HpHp", _STATS_2D)
)
assert len(COLUMNS) == 115
DEVICES: Final = (
    "Danmini_Doorbell",
    "Ecobee_Thermostat",
    "Ennio_Doorbell",
    "Philips_B120N10_Baby_Monitor",
    "Provision_PT_737E_Security_Camera",
    "Provision_PT_838_Security_Camera",
    "Samsung_SNH_1011_N_Webcam",
    "SimpleHome_XCS7_1002_WHT_Security_Camera",
    "SimpleHome_XCS7_1003_WHT_Security_Camera",
)
GAFGYT: Final = ("combo", "junk", "scan", "tcp", "udp")
MIRAI: Final = ("ack", "scan", "syn", "udp", "udpplain")
_FLAT = re.compile(r"^(\d+)\.(benign|gafgyt\.(\w+)|mirai\.(\w+))\.csv$")


def find_nbaiot(root: Path) -> list[tuple[int, str, Path]]:
    """(device index, family, file) for every N-BaIoT CSV under ``root``, in a fixed order."""
    root = Path(root)
    found: list[tuple[int, str, Path]] = []
    for d, device in enumerate(DEVICES):
        folder = root / device
        if not (folder / "benign_traffic.csv").is_file():
            continue
        found.append((d, BENIGN, folder / "benign_traffic.csv"))
        for botnet, attacks in (("gafgyt", GAFGYT), ("mirai", MIRAI)):
            for a in attacks:
                f = folder / f"{botnet}_attacks" / f"{a}.csv"
                if f.is_file():
                    found.append((d, f"{botnet}_{a}", f))
    if not found and root.is_dir():
        for f in sorted(root.glob("*.csv")):
            m = _FLAT.match(f.name)
            if m and 1 <= int(m.group(1)) <= len(DEVICES):
                fam = BENIGN if m.group(2) == "benign" else m.group(2).replace(".", "_")
                found.append((int(m.group(1)) - 1, fam, f))
        found.sort(key=lambda t: (t[0], t[1] != BENIGN, t[1]))
    if not found:
        raise DataNotFoundError(
            f"N-BaIoT not found under {root}: need device folders ({DEVICES[0]}/benign_traffic.csv, ...) or the "
            "flat Kaggle files (1.benign.csv, 1.mirai.ack.csv, ...); download from https://archive.ics.uci.edu/dataset/442"
        )
    return found


def read_nbaiot(root: Path) -> RawTraffic:
    """Every N-BaIoT file under ``root``; device ids index :data:`DEVICES`."""
    parts = []
    offset = 0
    for d, fam, path in find_nbaiot(root):
        cols = read_csv_strings(path, COLUMNS)
        numeric = np.stack([to_float(path, c, cols[c]) for c in COLUMNS], axis=1)
        n = numeric.shape[0]
        parts.append(RawTraffic(
            name="nbaiot", numeric=numeric, numeric_names=COLUMNS, family=np.full(n, fam, dtype=object),
            device=np.full(n, d, dtype=np.int64), device_names=DEVICES,
            order=np.arange(offset, offset + n, dtype=np.float64), files=(path,),
        ))
        offset += n
    return concat_raw(parts, "nbaiot")
