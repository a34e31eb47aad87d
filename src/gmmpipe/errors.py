"""Exceptions the pipeline raises for bad input, so that a user sees one clear message."""


class PipelineError(Exception):
    """Base class of the pipeline's own errors."""


class ConfigError(PipelineError, ValueError):
    """The configuration is invalid; the message names the key and the value."""


class DataError(PipelineError, ValueError):
    """A dataset is invalid; the message names the file and, where known, the row and column."""


class CmdStanNotFoundError(PipelineError, RuntimeError):
    """No CmdStan installation could be found."""


class FitError(PipelineError, RuntimeError):
    """CmdStan failed, or a strict diagnostics gate did not pass."""


class StorageError(PipelineError, OSError):
    """An output cannot be written: no space left, a read-only or a non-writable directory."""
