"""The errors the product raises on purpose: each names what is wrong, so entry points
print it and exit instead of showing a traceback."""

from __future__ import annotations


class CtError(Exception):
    """Base of every error the product raises deliberately; the message is for people."""


class ConfigError(CtError, ValueError):
    """A configuration value that cannot be used; the message names the key."""


class DataError(CtError, ValueError):
    """Input data the pipeline must not train on.

    The message always says where (file or span), what (feature) and which value,
    so that whoever is on call can find the bad rows without reading code.
    """

    def __init__(self, message: str, *, path: str = "", feature: str = "", value: object = None):
        self.path = path
        self.feature = feature
        self.value = value
        text = message
        if feature:
            text = f"feature '{feature}': {text}"
        if value is not None:
            text = f"{text} (value {value!r})"
        if path:
            text = f"{path}: {text}"
        super().__init__(text)


class UnavailableError(CtError):
    """A service the product needs (ML Metadata, ...) cannot be reached; the message names it."""


class HomeBusyError(CtError):
    """The home is held by another run (one at a time per home); the message names the holder."""


class NotFoundError(CtError, KeyError):
    """Something asked for by name or version is not recorded (a run, a model version)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
