"""ToN-IoT, network data (Moustafa, "A new distributed architecture for evaluating AI-based security systems at
the edge: network TON_IoT datasets", Sustainable Cities and Society 2021).

Published by UNSW Canberra (https://research.unsw.edu.au/projects/toniot-datasets), file
``Train_Test_datasets/Train_Test_Network_dataset/train_test_network.csv`` (211,043 rows; the name's case varies
between copies, any ``train_test_network.csv`` is found). ``data.root`` is the folder holding it (or any folder
above it). Its 45-column header is :data:`COLUMNS`; Zeek writes ``-`` for "no value".

* identifiers dropped: ``ts``, ``src_ip``, ``dst_ip`` (and ``src_port``, ``dst_port`` with ``drop_ports``);
  free text dropped: ``dns_query``, ``ssl_subject``, ``ssl_issuer``, ``http_uri``, ``http_user_agent``;
* categorical (one-hot): :data:`CATEGORICAL`; numeric: the rest, ``-`` read as missing (NaN);
* labels: ``label`` (0 normal, 1 attack) and ``type`` (``normal`` or one of nine families: backdoor, ddos,
  dos, injection, mitm, password, ransomware, scanning, xss).

One file, not a train/test pair: the preprocessing's seeded split applies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import numpy as np

from ...core.errors import DataNotFoundError
from .table import RawTraffic, checked_families, read_csv_strings, to_float, to_str

__all__ = ["COLUMNS", "CATEGORICAL", "read_toniot", "find_toniot"]

COLUMNS: Final = (
    "ts", "src_ip", "src_port", "dst_ip", "dst_port", "proto", "service", "duration", "src_bytes", "dst_bytes",
    "conn_state", "missed_bytes", "src_pkts", "src_ip_bytes", "dst_pkts", "dst_ip_bytes", "dns_query",
    "dns_qclass", "dns_qtype", "dns_rcode", "dns_AA", "dns_RD", "dns_RA", "dns_rejected", "ssl_version",
    "ssl_cipher", "ssl_resumed", "ssl_established", "ssl_subject", "ssl_issuer", "http_trans_depth",
    "http_method", "http_uri", "http_version", "http_request_body_len", "http_response_body_len",
    "http_status_code", "http_user_agent", "http_orig_mime_types", "http_resp_mime_types", "weird_name",
    "weird_addl", "weird_notice", "label", "type",
)
IDENTIFIERS: Final = ("ts", "src_ip", "dst_ip")
PORT_COLUMNS: Final = ("src_port", "dst_port")
FREE_TEXT: Final = ("dns_query", "ssl_subject", "ssl_issuer", "http_uri", "http_user_agent")
CATEGORICAL: Final = (
    "proto", "service", "conn_state", "dns_AA", "dns_RD", "dns_RA", "dns_rejected", "ssl_version", "ssl_cipher",
    "ssl_resumed", "ssl_established", "http_method", "http_version", "http_orig_mime_types",
    "http_resp_mime_types", "weird_name", "weird_addl", "weird_notice",
)


def find_toniot(root: Path) -> Path:
    root = Path(root)
    hits = sorted(p for p in root.rglob("*.csv") if p.name.lower() == "train_test_network.csv") if root.is_dir() else []
    if not hits:
        raise DataNotFoundError(
            f"ToN-IoT network data not found under {root}: need train_test_network.csv (Train_Test_datasets/"
            "Train_Test_Network_dataset/); download from https://research.unsw.edu.au/projects/toniot-datasets"
        )
    return hits[0]


def read_toniot(root: Path) -> RawTraffic:
    path = find_toniot(root)
    cols = read_csv_strings(path, COLUMNS)
    skip = set(IDENTIFIERS + FREE_TEXT + CATEGORICAL + ("label", "type"))
    numeric_names = tuple(c for c in COLUMNS if c not in skip)
    numeric = np.stack([to_float(path, c, cols[c], missing=("", "-")) for c in numeric_names], axis=1)
    family = checked_families(path, cols, "type")
    return RawTraffic(
        name="toniot", numeric=numeric, numeric_names=numeric_names,
        categorical={c: to_str(cols[c]) for c in CATEGORICAL}, family=family,
        order=to_float(path, "ts", cols["ts"]), files=(path,), port_columns=PORT_COLUMNS,
    )
