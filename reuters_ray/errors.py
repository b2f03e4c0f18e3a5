"""Exceptions for bad input. Each message names the file, field or flag at fault."""


class ReutersRayError(ValueError):
    """Base class: bad input that the user can fix. The CLI prints it as one line and exits 2."""


class DataError(ReutersRayError):
    """Bad or unreadable input data."""


class ConfigError(ReutersRayError):
    """A bad configuration value, flag, or model name."""


class CheckpointError(ReutersRayError):
    """A checkpoint that is missing, damaged, or disagrees with the run's configuration."""
