"""Errors that end a job with a one-line message instead of a traceback."""


class ConfigError(ValueError):
    """A semantically wrong config value; the message names the key and the allowed values."""


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN or infinite loss); the message says where it happened."""


class DataError(Exception):
    """Bad or missing data file; the message names the file and what was wrong."""

    def __init__(self, message: str) -> None:
        """Store the message folded onto a single line."""
        super().__init__(" ".join(str(message).splitlines()))
