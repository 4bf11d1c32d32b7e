"""Network-traffic datasets (flow features) for intrusion detection: readers of the published files of
UNSW-NB15, CIC-IDS2017, N-BaIoT and ToN-IoT, a synthetic generator, the preprocessing and its disk cache."""

from .loader import CACHE_VERSION, TRAFFIC_DATASETS, load_prepared, source_files, traffic_cache_dir
from .meta import BENIGN_LABEL, TrafficMeta
from .preprocess import PreparedTraffic, TrafficOptions, preprocess, replace_nonfinite, split_rows
from .synthetic_traffic import make_synthetic_traffic
from .table import BENIGN, RawTraffic

__all__ = [
    "BENIGN",
    "BENIGN_LABEL",
    "CACHE_VERSION",
    "PreparedTraffic",
    "RawTraffic",
    "TRAFFIC_DATASETS",
    "TrafficMeta",
    "TrafficOptions",
    "load_prepared",
    "make_synthetic_traffic",
    "preprocess",
    "replace_nonfinite",
    "source_files",
    "split_rows",
    "traffic_cache_dir",
]
