"""CIC-IDS2017, the ``MachineLearningCVE`` CSVs (Sharafaldin, Habibi Lashkari & Ghorbani, ICISSP 2018).

Published by the Canadian Institute for Cybersecurity (https://www.unb.ca/cic/datasets/ids-2017.html),
archive ``MachineLearningCSV.zip``, folder ``MachineLearningCVE/`` with eight files, one per capture period
(:data:`FILES`). ``data.root`` is that folder (or its parent). Every file has the 79-column header
:data:`COLUMNS`, with the published quirks the reader handles:

* most names start with a space (``" Flow Duration"``, ``" Label"``): names are compared and kept stripped;
* ``" Fwd Header Length"`` appears twice: the second is ``Fwd Header Length.1`` (as pandas names it);
* ``Flow Bytes/s`` and ``" Flow Packets/s"`` hold ``Infinity`` and ``NaN`` (empty) values: parsed as ±inf /
  NaN and left to the preprocessing's stated rule;
* copies of the files concatenated with their headers repeat the header row inside a file: such rows are
  dropped;
* one label is written in Windows-1252 (``"Web Attack \\x96 Brute Force"``): files are decoded as cp1252.

Identifiers: ``Destination Port`` is dropped when ``drop_ports`` is set (the CVE files carry no IPs,
timestamps or flow ids). Labels: ``BENIGN`` → benign, every other ``Label`` → its family
(``DoS Hulk`` → ``dos_hulk``). The files are one capture, not a train/test pair: the preprocessing's seeded
split applies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import numpy as np

from ...core.errors import DataNotFoundError
from .table import BENIGN, RawTraffic, concat_raw, dedupe_names, family_key, read_csv_strings, to_float, to_labels

__all__ = ["COLUMNS", "FILES", "read_cicids2017", "find_cicids2017"]

COLUMNS: Final = (
    " Destination Port", " Flow Duration", " Total Fwd Packets", " Total Backward Packets",
    "Total Length of Fwd Packets", " Total Length of Bwd Packets", " Fwd Packet Length Max",
    " Fwd Packet Length Min", " Fwd Packet Length Mean", " Fwd Packet Length Std", "Bwd Packet Length Max",
    " Bwd Packet Length Min", " Bwd Packet Length Mean", " Bwd Packet Length Std", "Flow Bytes/s",
    " Flow Packets/s", " Flow IAT Mean", " Flow IAT Std", " Flow IAT Max", " Flow IAT Min", "Fwd IAT Total",
    " Fwd IAT Mean", " Fwd IAT Std", " Fwd IAT Max", " Fwd IAT Min", "Bwd IAT Total", " Bwd IAT Mean",
    " Bwd IAT Std", " Bwd IAT Max", " Bwd IAT Min", "Fwd PSH Flags", " Bwd PSH Flags", " Fwd URG Flags",
    " Bwd URG Flags", " Fwd Header Length", " Bwd Header Length", "Fwd Packets/s", " Bwd Packets/s",
    " Min Packet Length", " Max Packet Length", " Packet Length Mean", " Packet Length Std",
    " Packet Length Variance", "FIN Flag Count", " SYN Flag Count", " RST Flag Count", " PSH Flag Count",
    " ACK Flag Count", " URG Flag Count", " CWE Flag Count", " ECE Flag Count", " Down/Up Ratio",
    " Average Packet Size", " Avg Fwd Segment Size", " Avg Bwd Segment Size", " Fwd Header Length",
    "Fwd Avg Bytes/Bulk", " Fwd Avg Packets/Bulk", " Fwd Avg Bulk Rate", " Bwd Avg Bytes/Bulk",
    " Bwd Avg Packets/Bulk", "Bwd Avg Bulk Rate", "Subflow Fwd Packets", " Subflow Fwd Bytes",
    " Subflow Bwd Packets", " Subflow Bwd Bytes", "Init_Win_bytes_forward", " Init_Win_bytes_backward",
    " act_data_pkt_fwd", " min_seg_size_forward", "Active Mean", " Active Std", " Active Max", " Active Min",
    "Idle Mean", " Idle Std", " Idle Max", " Idle Min", " Label",
)
FILES: Final = (
    "Monday-WorkingHours.pcap_ISCX.csv",
    "Tuesday-WorkingHours.pcap_ISCX.csv",
    "Wednesday-workingHours.pcap_ISCX.csv",
    "Thursday-WorkingHours-Morning-WebAttacks.pcap_ISCX.csv",
    "Thursday-WorkingHours-Afternoon-Infilteration.pcap_ISCX.csv",
    "Friday-WorkingHours-Morning.pcap_ISCX.csv",
    "Friday-WorkingHours-Afternoon-PortScan.pcap_ISCX.csv",
    "Friday-WorkingHours-Afternoon-DDos.pcap_ISCX.csv",
)
PORT_COLUMNS: Final = ("Destination Port",)
_SUBDIRS: Final = ("", "MachineLearningCVE", "MachineLearningCSV/MachineLearningCVE")


def find_cicids2017(root: Path) -> list[Path]:
    """The CSV files of the first folder under ``root`` that holds any of :data:`FILES` (all of its ``*.csv``),
    in capture order (Monday to Friday as :data:`FILES` lists them), other CSVs after them by name."""
    rank = {name: i for i, name in enumerate(FILES)}
    for sub in _SUBDIRS:
        folder = Path(root) / sub
        if any((folder / f).is_file() for f in FILES):
            return sorted(folder.glob("*.csv"), key=lambda p: (rank.get(p.name, len(FILES)), p.name))
    raise DataNotFoundError(
        f"CIC-IDS2017 not found under {root}: need the MachineLearningCVE CSVs ({FILES[0]}, ...) in it or in "
        f"{[s for s in _SUBDIRS if s]}; download MachineLearningCSV.zip from https://www.unb.ca/cic/datasets/ids-2017.html"
    )


def _read_file(path: Path, offset: int) -> RawTraffic:
    cols = read_csv_strings(path, COLUMNS, strip_names=True, encoding="cp1252")
    names = dedupe_names([c.strip() for c in COLUMNS])
    numeric_names = tuple(n for n in names if n != "Label")
    numeric = np.stack([to_float(path, n, cols[n]) for n in numeric_names], axis=1)
    labels = to_labels(path, "Label", cols["Label"])
    family = np.array([BENIGN if v.upper() == "BENIGN" else family_key(v) for v in labels], dtype=object)
    n = len(family)
    return RawTraffic(
        name="cicids2017", numeric=numeric, numeric_names=numeric_names, family=family,
        order=np.arange(offset, offset + n, dtype=np.float64), files=(path,),
        port_columns=PORT_COLUMNS,
    )


def read_cicids2017(root: Path) -> RawTraffic:
    """All MachineLearningCVE CSVs under ``root``, in file-name order."""
    parts, offset = [], 0
    for path in find_cicids2017(root):
        part = _read_file(path, offset)
        offset += len(part)
        parts.append(part)
    return concat_raw(parts, "cicids2017")
