"""npdistil's own exceptions. Every message names the file, tensor or input that caused it."""

from __future__ import annotations

__all__ = [
    "NpdistilError",
    "ConfigError",
    "CheckpointError",
    "UnsafeCheckpointError",
    "HubError",
    "HubUnreachableError",
    "InputError",
    "InputTypeError",
    "TextTooLongError",
    "IntegrityError",
]


class NpdistilError(Exception):
    """Base class of every error npdistil raises on purpose."""


class ConfigError(NpdistilError, ValueError):
    """A config.json that is missing, malformed, or not a DistilBERT config."""


class CheckpointError(NpdistilError, ValueError):
    """A weights file that cannot be read: missing, malformed, or a missing/mis-shaped tensor."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle that asks for something a state dict never needs (code, unknown globals)."""


class HubError(NpdistilError, OSError):
    """A Hugging Face Hub repository, revision or file that could not be had."""


class HubUnreachableError(HubError):
    """The Hub can't be reached (no network, offline mode) and the files are not cached."""


class InputError(NpdistilError, ValueError):
    """A bad value given to the model or the tokenizer (empty batch, ids out of range, ...)."""


class InputTypeError(NpdistilError, TypeError):
    """An input of the wrong type (a text that is not a str, ids that are not integers, ...)."""


class TextTooLongError(InputError):
    """A text longer than the model's positions, with ``long_text="error"``."""


class IntegrityError(CheckpointError):
    """A downloaded file whose sha256 differs from the one the Hub advertises."""
