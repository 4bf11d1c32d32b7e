"""fedshield's error hierarchy: every error a user can cause is a :class:`FedshieldError` whose message names
the key, parameter, file or client at fault (the CLI prints it without a traceback).

All are ``ValueError`` subclasses, so callers that catch ``ValueError`` keep working.
"""

from __future__ import annotations

__all__ = ["FedshieldError", "ConfigError", "ParameterError", "DataError", "DataFileError", "DataNotFoundError",
           "CheckpointError", "OutputError", "RoundInputError"]


class FedshieldError(ValueError):
    """Base of the errors fedshield raises for bad input."""


class ConfigError(FedshieldError):
    """A config that cannot be run; the message names each offending key."""


class ParameterError(ConfigError):
    """An impossible defense, attack or post-training parameter; the message names it and the allowed range."""


class DataError(FedshieldError):
    """A dataset that cannot be used."""


class DataFileError(DataError):
    """A data file exists but is malformed (wrong magic, truncated, extra bytes, bad shape or keys)."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A dataset could not be found anywhere it was looked for; the message lists the places and the fix."""


class CheckpointError(FedshieldError):
    """A checkpoint or model file that is damaged, foreign, or would hold a non-finite model; names the file."""


class OutputError(FedshieldError):
    """An output folder that cannot be used, or a file of one that cannot be read; the message names it."""


class RoundInputError(FedshieldError):
    """One round's input a defense cannot aggregate (shapes, dtypes, NaN/Inf, a client id twice, lying sample
    counts, fewer clients than the defense needs); the message names the clients or the defense's parameter."""
