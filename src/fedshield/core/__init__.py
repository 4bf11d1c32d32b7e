"""The bottom layer: errors, the registry type, parameter specs, numeric helpers and seeding.

Everything else in fedshield imports from here; nothing here imports another fedshield package
(docs/architecture.md, "Layers").
"""

from .errors import ConfigError, DataError, DataFileError, DataNotFoundError, FedshieldError, ParameterError
from .params import Param, boolean, choice, integer, number, spec_from_signature, validate_params
from .registry import Registry
from .seeding import derive_seed, numpy_stream, torch_stream

__all__ = [
    "ConfigError",
    "DataError",
    "DataFileError",
    "DataNotFoundError",
    "FedshieldError",
    "Param",
    "ParameterError",
    "Registry",
    "boolean",
    "choice",
    "derive_seed",
    "integer",
    "number",
    "numpy_stream",
    "spec_from_signature",
    "torch_stream",
    "validate_params",
]
