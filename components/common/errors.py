"""Errors raised for bad input data; they name the file, the feature and the value."""

from __future__ import annotations


class DataError(ValueError):
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
