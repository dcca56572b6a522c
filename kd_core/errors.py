"""User-facing errors. Each message says what went wrong and what to do."""


class KDError(Exception):
    """Base class: the CLI prints it as `error: ...` and exits non-zero."""


class DataError(KDError):
    """A dataset could not be found, read or split."""


class CheckpointError(KDError):
    """A checkpoint is corrupt, foreign, or for another model."""


class ConfigError(KDError):
    """A configuration value is out of range or inconsistent."""
