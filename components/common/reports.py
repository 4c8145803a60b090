"""How results leave a step: as JSON artifacts the next step reads back, and as Markdown
views the Kubeflow UI shows beside each step."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Iterable, Sequence, TypeVar

Record = TypeVar("Record", bound="JsonRecord")


class JsonRecord:
    """A frozen dataclass that writes itself as JSON and reads itself back, nested
    dataclasses, tuples and optional fields included (the types come from its annotations)."""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls: type[Record], text: str) -> Record:
        return _build(cls, json.loads(text))


def _build(kind: Any, raw: Any) -> Any:
    if raw is None:
        return None
    if dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        return kind(**{f.name: _build(hints[f.name], raw[f.name]) for f in dataclasses.fields(kind)})
    origin, arguments = typing.get_origin(kind), typing.get_args(kind)
    if origin is tuple:
        if len(arguments) == 2 and arguments[1] is Ellipsis:
            return tuple(_build(arguments[0], value) for value in raw)
        return tuple(_build(argument, value) for argument, value in zip(arguments, raw))
    if origin is list:
        return [_build(arguments[0], value) for value in raw]
    if origin in (typing.Union, types.UnionType):
        present = [argument for argument in arguments if argument is not type(None)]
        return _build(present[0], raw) if len(present) == 1 else raw
    return raw


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table; `|` inside cells is escaped."""

    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, headers)) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)
