"""UNSW-NB15, the partitioned training/testing-set CSVs (Moustafa & Slay, MilCIS 2015).

Published by UNSW Canberra (https://research.unsw.edu.au/projects/unsw-nb15-dataset), folder
"Training and Testing Sets": ``UNSW_NB15_training-set.csv`` (175,341 rows) and ``UNSW_NB15_testing-set.csv``
(82,332 rows), both with the 45-column header :data:`COLUMNS`. ``data.root`` is the folder holding the two
files (or a ``UNSW-NB15/`` / ``Training and Testing Sets/`` subfolder of it).

* identifiers: ``id`` (a row counter) is dropped;
* categorical: ``proto``, ``service`` (``-`` = none), ``state``;
* labels: ``label`` (0 normal, 1 attack) and ``attack_cat`` (``Normal`` or one of nine families: Analysis,
  Backdoor, DoS, Exploits, Fuzzers, Generic, Reconnaissance, Shellcode, Worms); the family is the lower-cased
  ``attack_cat`` and a row whose ``label`` disagrees with it is an error naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import numpy as np

from ...core.errors import DataNotFoundError
from .table import RawTraffic, checked_families, concat_raw, read_csv_strings, to_float, to_str

__all__ = ["COLUMNS", "CATEGORICAL", "FILES", "read_unsw_nb15", "find_unsw_nb15"]

COLUMNS: Final = (
    "id", "dur", "proto", "service", "state", "spkts", "dpkts", "sbytes", "dbytes", "rate", "sttl", "dttl",
    "sload", "dload", "sloss", "dloss", "sinpkt", "dinpkt", "sjit", "djit", "swin", "stcpb", "dtcpb", "dwin",
    "tcprtt", "synack", "ackdat", "smean", "dmean", "trans_depth", "response_body_len", "ct_srv_src",
    "ct_state_ttl", "ct_dst_ltm", "ct_src_dport_ltm", "ct_dst_sport_ltm", "ct_dst_src_ltm", "is_ftp_login",
    "ct_ftp_cmd", "ct_flw_http_mthd", "ct_src_ltm", "ct_srv_dst", "is_sm_ips_ports", "attack_cat", "label",
)
CATEGORICAL: Final = ("proto", "service", "state")
IDENTIFIERS: Final = ("id",)
FILES: Final = {"train": "UNSW_NB15_training-set.csv", "test": "UNSW_NB15_testing-set.csv"}
_SUBDIRS: Final = ("", "UNSW-NB15", "UNSW_NB15", "Training and Testing Sets")


def find_unsw_nb15(root: Path) -> Path:
    """The folder under ``root`` that holds both files; :class:`DataNotFoundError` listing what is missing."""
    for sub in _SUBDIRS:
        folder = Path(root) / sub
        if all((folder / f).is_file() for f in FILES.values()):
            return folder
    raise DataNotFoundError(
        f"UNSW-NB15 not found under {root}: need {FILES['train']} and {FILES['test']} in it (or in one of "
        f"{[s for s in _SUBDIRS if s]}); download the 'Training and Testing Sets' from "
        "https://research.unsw.edu.au/projects/unsw-nb15-dataset"
    )


def _read_file(path: Path, is_test: bool) -> RawTraffic:
    cols = read_csv_strings(path, COLUMNS)
    numeric_names = tuple(c for c in COLUMNS if c not in CATEGORICAL + IDENTIFIERS + ("attack_cat", "label"))
    numeric = np.stack([to_float(path, c, cols[c]) for c in numeric_names], axis=1)
    family = checked_families(path, cols, "attack_cat")
    n = len(family)
    return RawTraffic(
        name="unsw_nb15",
        numeric=numeric,
        numeric_names=numeric_names,
        categorical={c: to_str(cols[c]) for c in CATEGORICAL},
        family=family,
        is_test=np.full(n, is_test),
        order=to_float(path, "id", cols["id"]),
        files=(path,),
    )


def read_unsw_nb15(root: Path) -> RawTraffic:
    """Both files of UNSW-NB15 under ``root``, training rows first."""
    folder = find_unsw_nb15(root)
    return concat_raw([_read_file(folder / FILES["train"], False), _read_file(folder / FILES["test"], True)], "unsw_nb15")
