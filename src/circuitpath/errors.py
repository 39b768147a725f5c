"""Exceptions raised by circuitpath.

Every error a user can cause derives from `CircuitPathError` and carries a one-line message that
names the bad value; the CLI prints that line and exits with status 2.
"""


class CircuitPathError(Exception):
    """Base class of every error caused by bad input or a bad file."""


class ConfigError(CircuitPathError, ValueError):
    """A configuration value is out of range, inconsistent or unknown."""


class InputError(CircuitPathError, ValueError):
    """Tokens given to the model are out of range or of the wrong shape."""


class RunError(CircuitPathError):
    """A run directory is missing, not a run, already exists, or is locked by another writer."""


class CheckpointError(CircuitPathError):
    """A checkpoint file is missing, truncated, corrupted or does not match its run."""


class HookError(CircuitPathError, KeyError):
    """An unknown hook name was asked for."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0]) if self.args else ""


class NotApplicableError(CircuitPathError, NotImplementedError):
    """A general transformer method that does not apply to this model's architecture."""
