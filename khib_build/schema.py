"""Declarative settings: one declaration per key drives YAML validation, docs and JSON.

A file is composed into PyYAML nodes (which carry their line), then each node is
checked against a :class:`Setting` table.  Every problem becomes a
:class:`ConfigError` naming the file, the line and what was expected.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from khib_build.errors import ConfigError

REQUIRED = object()


@dataclass(frozen=True)
class Source:
    """The file a node came from; relative paths in it resolve against its folder."""

    path: Path

    @property
    def base(self) -> Path:
        return self.path.parent

    def error(self, node: yaml.Node | None, message: str) -> ConfigError:
        line = node.start_mark.line + 1 if node is not None else None
        return ConfigError(self.path, line, message)


class Kind:
    """How one value is checked and converted; ``expected`` reads as a noun phrase."""

    expected = "a value"

    def parse(self, node: yaml.Node, src: Source) -> Any:
        raise NotImplementedError

    def scalar(self, node: yaml.Node, src: Source, tags: Sequence[str]) -> Any:
        if not isinstance(node, yaml.ScalarNode) or node.tag.rsplit(":", 1)[-1] not in tags:
            got = describe(node)
            hint = " (quote it to make it a string)" if "str" in tags else ""
            raise src.error(node, f"expected {self.expected}, got {got}{hint}")
        return _CONSTRUCTOR.yaml_constructors[node.tag](_CONSTRUCTOR, node)


_CONSTRUCTOR = yaml.SafeLoader("")


def describe(node: yaml.Node) -> str:
    """Name a node's type the way a person would."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    kind = node.tag.rsplit(":", 1)[-1]
    names = {"str": "a string", "int": "an integer", "float": "a number", "bool": "a boolean",
             "null": "nothing (null)"}
    return f"{names.get(kind, kind)} {node.value!r}" if kind != "null" else names["null"]


class Str(Kind):
    """A string, optionally matching a pattern.

    With ``verbatim``, any plain scalar is taken as the text it is written as, so that
    ``version: 1.10`` or a sha256 made only of digits are not read as numbers.
    """

    def __init__(self, pattern: str | None = None, expected: str = "a string",
                 verbatim: bool = False) -> None:
        self.pattern = re.compile(pattern) if pattern else None
        self.expected = expected
        self.verbatim = verbatim

    def parse(self, node: yaml.Node, src: Source) -> str:
        if self.verbatim and isinstance(node, yaml.ScalarNode) and node.tag.endswith(
                (":int", ":float")):
            value = node.value
        else:
            value = self.scalar(node, src, ("str",))
        if self.pattern and not self.pattern.fullmatch(value):
            raise src.error(node, f"expected {self.expected}, got {value!r}")
        return value


class Int(Kind):
    """An integer within bounds."""

    def __init__(self, low: int | None = None, high: int | None = None) -> None:
        self.low, self.high = low, high
        self.expected = "an integer" + (
            f" from {low} to {high}" if low is not None and high is not None else ""
        )

    def parse(self, node: yaml.Node, src: Source) -> int:
        value = self.scalar(node, src, ("int",))
        if (self.low is not None and value < self.low) or (
            self.high is not None and value > self.high
        ):
            raise src.error(node, f"expected {self.expected}, got {value}")
        return value


class Choice(Kind):
    """One of a fixed set of strings."""

    def __init__(self, choices: Sequence[str]) -> None:
        self.choices = tuple(choices)
        self.expected = "one of " + ", ".join(self.choices)

    def parse(self, node: yaml.Node, src: Source) -> str:
        value = self.scalar(node, src, ("str",))
        if value not in self.choices:
            hint = suggest(value, self.choices)
            raise src.error(node, f"expected {self.expected}, got {value!r}{hint}")
        return value


class FilePath(Kind):
    """A path, relative to the file that names it; ``must_exist`` checks it."""

    def __init__(self, must_exist: bool = False, is_dir: bool = False) -> None:
        self.must_exist = must_exist
        self.is_dir = is_dir
        self.expected = "a directory path" if is_dir else "a file path"

    def parse(self, node: yaml.Node, src: Source) -> Path:
        text = self.scalar(node, src, ("str",))
        path = (src.base / Path(text).expanduser()).resolve()
        if self.must_exist:
            ok = path.is_dir() if self.is_dir else path.is_file()
            if not ok:
                what = "directory" if self.is_dir else "file"
                raise src.error(node, f"{what} {text!r} does not exist (looked for {path})")
        return path


class ListOf(Kind):
    """A list of items of one kind; ``unique`` refuses repeated items."""

    def __init__(self, item: Kind, unique: bool = False, min_items: int = 0) -> None:
        self.item, self.unique, self.min_items = item, unique, min_items
        self.expected = f"a list, each item {item.expected}"

    def parse(self, node: yaml.Node, src: Source) -> tuple[Any, ...]:
        if not isinstance(node, yaml.SequenceNode):
            raise src.error(node, f"expected {self.expected}, got {describe(node)}")
        if len(node.value) < self.min_items:
            raise src.error(node, f"expected at least {self.min_items} item(s) in {self.expected}")
        values: list[Any] = []
        for child in node.value:
            value = self.item.parse(child, src)
            if self.unique and value in values:
                raise src.error(child, f"{value!r} is listed twice")
            values.append(value)
        return tuple(values)


class Optional(Kind):
    """A value of the wrapped kind, or null."""

    def __init__(self, inner: Kind) -> None:
        self.inner = inner
        self.expected = f"{inner.expected} or null"

    def parse(self, node: yaml.Node, src: Source) -> Any:
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return None
        return self.inner.parse(node, src)


@dataclass(frozen=True)
class Origin:
    """Where a record was read: its file and the line of each key and list item."""

    path: Path
    lines: dict[str, int]

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(self.path, self.lines.get(key), message)


def setting(kind: Kind, default: Any = REQUIRED, help: str = "") -> Any:
    """Declare a record field once: its kind, its default (or REQUIRED) and its help."""
    meta = {"kind": kind, "help": help}
    if default is REQUIRED:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


def origin_field() -> Any:
    """The field a record keeps its :class:`Origin` in (not a setting)."""
    return field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Setting:
    """One key of a file format, as read off a record field."""

    name: str
    kind: Kind
    default: Any
    help: str

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def settings_of(cls: type) -> dict[str, Setting]:
    """The settings a record class declares, in declaration order."""
    return {
        f.name: Setting(f.name, f.metadata["kind"],
                        REQUIRED if f.default is MISSING else f.default, f.metadata["help"])
        for f in fields(cls)
        if "kind" in f.metadata
    }


class Record(Kind):
    """A mapping whose keys are the settings of a dataclass; parses to an instance."""

    def __init__(self, cls: type, expected: str = "a mapping") -> None:
        self.cls = cls
        self.settings = settings_of(cls)
        self.expected = expected

    def parse(self, node: yaml.Node, src: Source) -> Any:
        if not isinstance(node, yaml.MappingNode):
            raise src.error(node, f"expected {self.expected}, got {describe(node)}")
        seen: dict[str, yaml.Node] = {}
        values: dict[str, Any] = {}
        lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = Str(expected="a key").parse(key_node, src)
            if key in seen:
                first = seen[key].start_mark.line + 1
                raise src.error(key_node, f"key {key!r} is given twice (first on line {first})")
            seen[key] = key_node
            setting = self.settings.get(key)
            if setting is None:
                raise src.error(
                    key_node, f"unknown key {key!r}{suggest(key, self.settings)}; "
                    f"expected one of: {', '.join(self.settings)}"
                )
            values[key] = setting.kind.parse(value_node, src)
            lines[key] = key_node.start_mark.line + 1
            if isinstance(value_node, yaml.SequenceNode):
                for i, item in enumerate(value_node.value):
                    lines[f"{key}[{i}]"] = item.start_mark.line + 1
        for name, s in self.settings.items():
            if name not in values and s.required:
                raise src.error(node, f"missing key '{name}': {s.help}")
        if "origin" in {f.name for f in fields(self.cls)}:
            values["origin"] = Origin(src.path, lines)
        return self.cls(**values)


def suggest(word: str, choices: Any) -> str:
    """A ' (did you mean X?)' hint for a misspelt key or value, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def compose(path: Path) -> yaml.Node:
    """Read one YAML document as nodes, turning syntax errors into ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, None, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, None, f"cannot read: {exc}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = " ".join(filter(None, [exc.context, exc.problem]))
        raise ConfigError(path, line, f"invalid YAML: {problem}") from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError(path, line, f"invalid YAML: character {exc.character!r} is not "
                          "allowed in a YAML file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, 1, f"invalid YAML: {' '.join(str(exc).split())}") from None
    if node is None:
        raise ConfigError(path, 1, "the file is empty; expected a mapping of settings")
    return node


def load(path: Path, cls: type) -> Any:
    """Compose ``path`` and validate it as a record of ``cls``."""
    return Record(cls).parse(compose(path), Source(path))


def document(cls: type) -> str:
    """A Markdown table of a record's settings, as the docs show it."""
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for s in settings_of(cls).values():
        if s.required:
            default = "required"
        elif isinstance(s.kind, Record):
            default = "see below"
        else:
            value = list(s.default) if isinstance(s.default, tuple) else s.default
            default = f"`{json.dumps(value)}`"
        rows.append(f"| `{s.name}` | {s.kind.expected} | {default} | {s.help} |")
    return "\n".join(rows)
