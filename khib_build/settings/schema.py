"""Declarative settings: one declaration per key drives YAML validation, docs and JSON.

A file is composed into PyYAML nodes (which carry their line), then each node is
checked against a :class:`Setting` table.  Every problem becomes a
:class:`ConfigError` naming the file, the line and what was expected.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from khib_build.errors import ConfigError
from khib_build.fsutil import read_text
from khib_build.settings.kinds import TEMPLATE_HINT, Kind, Source, Str, describe, suggest

REQUIRED = object()


@dataclass(frozen=True)
class Origin:
    """Where a record was read: its file, the line of each key and list item, and for a
    key set by an included file, that file."""

    path: Path
    lines: dict[str, int]
    files: dict[str, Path] = field(default_factory=dict)

    def file(self, key: str) -> Path:
        """The file that gave ``key`` (``packages[2]``: that item's, as ``key+`` can join
        items of two files in one list)."""
        return self.files.get(key) or self.files.get(key.split("[", 1)[0], self.path)

    def where(self, key: str) -> str:
        return f"{self.file(key)}:{self.lines[key]}" if key in self.lines else "default"

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(self.file(key), self.lines.get(key), message)


@dataclass(frozen=True)
class Computed:
    """A default worked out when a run starts (from the machine or the environment),
    and how ``--help`` and the docs describe it."""

    compute: Callable[[Mapping[str, str]], Any]
    shown: str


def setting(kind: Kind, default: Any = REQUIRED, help: str = "", *,
            flags: tuple[str, ...] = (), env: str | None = None, metavar: str | None = None,
            shown: str | None = None) -> Any:
    """Declare a setting once: its kind, its default (REQUIRED, a value or
    :class:`Computed`) and its help; for a run option, its command-line flags, the
    environment variable that sets it, and how its default reads in ``--help``."""
    meta = {"kind": kind, "help": help, "default": default, "flags": flags, "env": env,
            "metavar": metavar, "shown": shown}
    if default is REQUIRED or isinstance(default, Computed):
        return field(metadata=meta)
    return field(default=default, metadata=meta)


def origin_field() -> Any:
    """The field a record keeps its :class:`Origin` in (not a setting)."""
    return field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Setting:
    """One key of a file format or one run option, as read off a record field."""

    name: str
    kind: Kind
    default: Any
    help: str
    flags: tuple[str, ...] = ()
    env: str | None = None
    metavar: str | None = None
    shown: str | None = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def default_for(self, environ: Mapping[str, str]) -> Any:
        return self.default.compute(environ) if isinstance(self.default, Computed) \
            else self.default

    def described_default(self) -> str:
        """The default as ``--help`` and the docs state it."""
        if self.shown is not None:
            return self.shown
        if isinstance(self.default, Computed):
            return self.default.shown
        value = list(self.default) if isinstance(self.default, tuple) else self.default
        return "none" if value is None else str(value) if isinstance(value, Path) \
            else json.dumps(value)


def settings_of(cls: type) -> dict[str, Setting]:
    """The settings a record class declares, in declaration order."""
    return {f.name: Setting(f.name, **f.metadata) for f in fields(cls) if "kind" in f.metadata}


def unique_keys(pairs: list[tuple[yaml.Node, yaml.Node]], src: Source) -> None:
    """A key given twice in one mapping is an error at its second place."""
    seen: dict[str, yaml.Node] = {}
    for key_node, _ in pairs:
        if isinstance(key_node, yaml.ScalarNode):
            if key_node.value in seen:
                first = seen[key_node.value].start_mark.line + 1
                raise src.error(key_node, f"key {key_node.value!r} is given twice (first on "
                                f"line {first})")
            seen[key_node.value] = key_node


def keyed(error: ConfigError, key: str) -> ConfigError:
    """``error`` naming the key whose value it is about (once: a nested record's error
    names its own key first, ``toolchain: cflags: ...``)."""
    if error.message.startswith(f"{key}: ") or error.message.startswith(f"{key}["):
        return error
    return ConfigError(error.path, error.line, f"{key}: {error.message}")


class Record(Kind):
    """A mapping whose keys are the settings of a dataclass; parses to an instance."""

    def __init__(self, cls: type, expected: str = "a mapping") -> None:
        self.cls = cls
        self.settings = settings_of(cls)
        self.expected = expected

    def parse(self, node: yaml.Node, src: Source) -> Any:
        if not isinstance(node, yaml.MappingNode):
            raise src.error(node, f"expected {self.expected}, got {describe(node)}")
        unique_keys(node.value, src)
        values: dict[str, Any] = {}
        lines: dict[str, int] = {}
        files: dict[str, Path] = {}
        for key_node, value_node in node.value:
            key, setting = self.setting_of(key_node, src)
            try:
                values[key] = setting.kind.parse(value_node, src)
            except ConfigError as exc:  # every value error names its key
                raise keyed(exc, key) from None
            lines[key] = key_node.start_mark.line + 1
            if key_node.start_mark.name != str(src.path):
                files[key] = Path(key_node.start_mark.name)
            if isinstance(value_node, yaml.SequenceNode):
                for i, item in enumerate(value_node.value):
                    lines[f"{key}[{i}]"] = item.start_mark.line + 1
                    if item.start_mark.name != key_node.start_mark.name:
                        files[f"{key}[{i}]"] = Path(item.start_mark.name)
        for name, s in self.settings.items():
            if name not in values and s.required:
                raise src.error(node, f"missing key '{name}': {s.help}")
        if "origin" in {f.name for f in fields(self.cls)}:
            values["origin"] = Origin(src.path, lines, files)
        return self.cls(**values)

    def setting_of(self, key_node: yaml.Node, src: Source) -> tuple[str, Setting]:
        """A key and its setting; an unknown key is an error."""
        key = Str(expected="a key").parse(key_node, src)
        setting = self.settings.get(key)
        if setting is None:
            raise src.error(key_node, f"unknown key {key!r}{suggest(key, self.settings)}; "
                            f"expected one of: {', '.join(self.settings)}")
        return key, setting

    def check_part(self, node: yaml.Node, src: Source) -> None:
        """An included file's settings, checked as strictly as a whole config's, except
        that keys may be missing (the including file or another include gives them):
        its shape, every key (``key+`` extends a list), every value."""
        if not isinstance(node, yaml.MappingNode):
            raise src.error(node, f"expected {self.expected} of settings, got {describe(node)}")
        unique_keys(node.value, src)
        for key_node, value_node in node.value:
            extends = isinstance(key_node.value, str) and key_node.value.endswith("+")
            name_node = (yaml.ScalarNode(key_node.tag, key_node.value[:-1], key_node.start_mark,
                                         key_node.end_mark) if extends else key_node)
            key, setting = self.setting_of(name_node, src)
            try:
                if isinstance(setting.kind, Record):
                    setting.kind.check_part(value_node, src)
                else:
                    setting.kind.parse(value_node, src)
            except ConfigError as exc:
                raise keyed(exc, key) from None


class MappingOf(Kind):
    """A mapping of keys of one kind to values of another; parses to (key, value) pairs
    in the file's order (a frozen record holds no dict)."""

    def __init__(self, key: Kind, value: Kind) -> None:
        self.key, self.value = key, value
        self.expected = f"a mapping of {key.expected} to {value.expected}"

    def parse(self, node: yaml.Node, src: Source) -> tuple[tuple[Any, Any], ...]:
        if not isinstance(node, yaml.MappingNode):
            raise src.error(node, f"expected {self.expected}, got {describe(node)}")
        unique_keys(node.value, src)
        return tuple((self.key.parse(k, src), self.value.parse(v, src)) for k, v in node.value)


def compose(path: Path) -> yaml.Node:
    """Read one YAML document as nodes, turning syntax errors into ConfigError."""
    text = read_text(path)
    loader = None
    try:
        loader = yaml.SafeLoader(text)
        loader.name = str(path)  # every node's marks name its file (configs include configs)
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = " ".join(filter(None, [exc.context, exc.problem]))
        near = text.splitlines()[max(0, line - 2):line] if line else []
        if any("{{" in seen for seen in near):  # the error line, or the one it ends
            problem += f"; {TEMPLATE_HINT}"
        raise ConfigError(path, line, f"invalid YAML: {problem}") from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError(path, line, f"invalid YAML: character {exc.character!r} is not "
                          "allowed in a YAML file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, 1, f"invalid YAML: {' '.join(str(exc).split())}") from None
    finally:
        if loader is not None:
            loader.dispose()
    if node is None:
        raise ConfigError(path, 1, "the file is empty; expected a mapping of settings")
    return node


def compose_including(path: Path, builtin: Callable[[str], Path | None] | None = None,
                      chain: tuple[Path, ...] = (), record: Record | None = None) -> yaml.Node:
    """Compose ``path`` with the files its ``include`` key names (one path or a list,
    relative to it, else as ``builtin`` finds them) read first: a key of the including
    file replaces the included value, a mapping is merged key by key, and ``key+``
    extends an included list. With ``record``, each included file's own settings are
    checked against it before the merge (whatever the including file overrides)."""
    node = compose(path)
    src = Source(path)
    if not isinstance(node, yaml.MappingNode):
        if chain and record is not None:
            record.check_part(node, src)  # names the included file
        return node
    own = [(k, v) for k, v in node.value if not (isinstance(k, yaml.ScalarNode)
                                                 and k.value == "include")]
    if chain and record is not None:
        record.check_part(yaml.MappingNode(node.tag, own, node.start_mark, node.end_mark), src)
    includes = [v for k, v in node.value if isinstance(k, yaml.ScalarNode)
                and k.value == "include"]
    if not includes:
        return node
    items = includes[0].value if isinstance(includes[0], yaml.SequenceNode) else [includes[0]]
    merged = yaml.MappingNode("tag:yaml.org,2002:map", [], node.start_mark, node.end_mark)
    for item in items:
        name = Str(expected="a config file path").parse(item, src)
        included = (path.parent / name).resolve()
        if not included.is_file() and builtin is not None:
            included = builtin(name) or included
        if included in (*chain, path):
            raise src.error(item, f"include {included} is a cycle: "
                            + " -> ".join(map(str, (*chain, path, included))))
        if not included.is_file():
            raise src.error(item, f"include: no such file {included}")
        merged = merge_nodes(merged, compose_including(included, builtin, (*chain, path),
                                                       record), src)
    unique_keys(own, src)  # (the merge below would hide the second)
    own_node = yaml.MappingNode(node.tag, own, node.start_mark, node.end_mark)
    return merge_nodes(merged, own_node, src)


def merge_nodes(base: yaml.Node, top: yaml.Node, src: Source) -> yaml.Node:
    """``top`` over ``base``: mappings key by key, ``key+`` appending to a list."""
    if not (isinstance(base, yaml.MappingNode) and isinstance(top, yaml.MappingNode)):
        return top
    pairs = {k.value: (k, v) for k, v in base.value}
    for key_node, value in top.value:
        key = key_node.value
        if isinstance(key, str) and key.endswith("+"):
            key = key[:-1]
            old = pairs.get(key, (None, None))[1]
            if not isinstance(value, yaml.SequenceNode) or not isinstance(
                    old, yaml.SequenceNode | None):
                raise src.error(key_node, f"{key}+ extends a list: both the included {key} "
                                "and this value must be lists")
            key_node = yaml.ScalarNode("tag:yaml.org,2002:str", key, key_node.start_mark,
                                       key_node.end_mark)
            value = yaml.SequenceNode(value.tag, [*(old.value if old else []), *value.value],
                                      value.start_mark, value.end_mark)
        elif key in pairs:
            value = merge_nodes(pairs[key][1], value, src)
        pairs[key] = (key_node, value)
    return yaml.MappingNode(top.tag, list(pairs.values()), top.start_mark, top.end_mark)


def load(path: Path, cls: type, builtin: Callable[[str], Path | None] | None = None) -> Any:
    """Compose ``path`` and validate it as a record of ``cls``; with ``builtin`` (which
    finds a built-in file by name), with the files it includes."""
    record = Record(cls)
    node = compose_including(path, builtin, record=record) if builtin else compose(path)
    return record.parse(node, Source(path))


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
