"""Datasets as in-memory tensors and client partitions (docs/architecture.md, ``data/``;
docs/partitions.md).

Knows nothing of models or federated learning: it turns files (IDX, CIFAR-10 batches) or a seed
(synthetic) into tensors, and labels into per-client index tensors.
"""

from .cifar import read_cifar10, read_cifar_batch
from .datasets import (
    DATASETS,
    DATASET_NAMES,
    Dataset,
    clear_dataset_cache,
    data_install_hint,
    load_dataset,
    locate_dataset,
)
from .idx import DataFileError, DataNotFoundError, read_idx, read_idx_images, read_idx_labels, write_idx
from .partition import PARTITION_METHODS, PARTITIONS, class_histogram, deg_niid, dirichlet, fang_q, iid, partition
from .synthetic import make_synthetic

__all__ = [
    "DATASETS",
    "DATASET_NAMES",
    "PARTITIONS",
    "PARTITION_METHODS",
    "DataFileError",
    "DataNotFoundError",
    "Dataset",
    "class_histogram",
    "clear_dataset_cache",
    "data_install_hint",
    "deg_niid",
    "dirichlet",
    "fang_q",
    "iid",
    "load_dataset",
    "locate_dataset",
    "make_synthetic",
    "partition",
    "read_cifar10",
    "read_cifar_batch",
    "read_idx",
    "read_idx_images",
    "read_idx_labels",
    "write_idx",
]
