"""Kinds of values a setting takes: each checks a YAML node (naming the file and line)
and, for run options, the text of a flag or an environment variable."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from khib_build.errors import ConfigError


@dataclass(frozen=True)
class Source:
    """The file a node came from; relative paths in it resolve against its folder."""

    path: Path

    def file_of(self, node: yaml.Node | None) -> Path:
        """The file a node was read from: this one, or a file it includes."""
        name = node.start_mark.name if node is not None else ""
        return self.path if not name or name.startswith("<") else Path(name)

    def error(self, node: yaml.Node | None, message: str) -> ConfigError:
        line = node.start_mark.line + 1 if node is not None else None
        return ConfigError(self.file_of(node), line, message)


class Kind:
    """How one value is checked and converted; ``expected`` reads as a noun phrase."""

    expected = "a value"

    def parse(self, node: yaml.Node, src: Source) -> Any:
        raise NotImplementedError

    def from_text(self, text: str) -> Any:
        """The value a command-line argument or an environment variable spells; a
        ValueError names what was expected."""
        raise ValueError(f"{self.expected} cannot be given on the command line")

    def scalar(self, node: yaml.Node, src: Source, tags: Sequence[str]) -> Any:
        if not isinstance(node, yaml.ScalarNode) or node.tag.rsplit(":", 1)[-1] not in tags:
            got = describe(node)
            hint = " (quote it to make it a string)" if "str" in tags else ""
            if "str" in tags and isinstance(node, yaml.MappingNode) and node.flow_style:
                hint = f" ({TEMPLATE_HINT})"
            raise src.error(node, f"expected {self.expected}, got {got}{hint}")
        return _CONSTRUCTOR.yaml_constructors[node.tag](_CONSTRUCTOR, node)


_CONSTRUCTOR = yaml.SafeLoader("")
TEMPLATE_HINT = ('a value that starts with {{ reads as a YAML mapping: quote it, '
                 'e.g. - "{{ cc }} -o hello hello.c"')


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

    def from_text(self, text: str) -> str:
        if self.pattern and not self.pattern.fullmatch(text):
            raise ValueError(f"expected {self.expected}, got {text!r}")
        return text


class Int(Kind):
    """An integer within bounds."""

    def __init__(self, low: int | None = None, high: int | None = None) -> None:
        self.low, self.high = low, high
        self.expected = "an integer" + (
            f" from {low} to {high}" if low is not None and high is not None else ""
        )

    def within(self, value: int) -> bool:
        return (self.low is None or value >= self.low) and (
            self.high is None or value <= self.high)

    def parse(self, node: yaml.Node, src: Source) -> int:
        value = self.scalar(node, src, ("int",))
        if not self.within(value):
            raise src.error(node, f"expected {self.expected}, got {value}")
        return value

    def from_text(self, text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise ValueError(f"expected {self.expected}, got {text!r}") from None
        if not self.within(value):
            raise ValueError(f"expected {self.expected}, got {value}")
        return value


class Seconds(Kind):
    """A duration: a finite number of seconds above zero."""

    expected = "a number of seconds above zero"

    def parse(self, node: yaml.Node, src: Source) -> float:
        value = float(self.scalar(node, src, ("int", "float")))
        if not 0 < value < float("inf"):
            raise src.error(node, f"expected {self.expected}, got {value}")
        return value

    def from_text(self, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"expected {self.expected}, got {text!r}") from None
        if not 0 < value < float("inf"):  # nan fails both comparisons
            raise ValueError(f"expected {self.expected}, got {text!r}")
        return value


class Flag(Kind):
    """On or off; on the command line a flag without a value, in the environment any
    non-empty value."""

    expected = "a boolean"

    def parse(self, node: yaml.Node, src: Source) -> bool:
        return bool(self.scalar(node, src, ("bool",)))

    def from_text(self, text: str) -> bool:
        return bool(text)


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

    def from_text(self, text: str) -> str:
        if text not in self.choices:
            raise ValueError(f"expected {self.expected}, got {text!r}{suggest(text, self.choices)}")
        return text


class FilePath(Kind):
    """A path, relative to the file that names it; ``must_exist`` checks it."""

    def __init__(self, must_exist: bool = False, is_dir: bool = False) -> None:
        self.must_exist = must_exist
        self.is_dir = is_dir
        self.expected = "a directory path" if is_dir else "a file path"

    def parse(self, node: yaml.Node, src: Source) -> Path:
        text = self.scalar(node, src, ("str",))
        path = (src.file_of(node).parent / Path(text).expanduser()).resolve()
        if self.must_exist:
            ok = path.is_dir() if self.is_dir else path.is_file()
            if not ok:
                what = "directory" if self.is_dir else "file"
                raise src.error(node, f"{what} {text!r} does not exist (looked for {path})")
        return path

    def from_text(self, text: str) -> Path:
        if not text:
            raise ValueError(f"expected {self.expected}, got an empty string")
        return Path(text).expanduser()  # relative to the working directory, as given


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

    def from_text(self, text: str) -> Any:
        return self.inner.from_text(text)


def suggest(word: str, choices: Any) -> str:
    """A ' (did you mean X?)' hint for a misspelt key or value, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


# Value kinds several formats share.
NAME = Str(r"[a-z0-9][a-z0-9+._-]*", "a name of lower-case letters, digits and + . _ -")
# What the fetcher can read: http(s) through requests, file:// from the filesystem.
URL = Str(r"(https?|file)://\S+", "an http(s):// or file:// URL")
