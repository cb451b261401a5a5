"""Buildroot-style device/permission tables: ownership, modes and nodes without root.

Each line is ``name type mode uid gid major minor start inc count`` (``-`` where a
column does not apply); ``#`` starts a comment.  Types: ``f`` file, ``d`` directory,
``c`` character device, ``b`` block device, ``p`` fifo.  With a count, a device line
makes name<start> … name<start+count-1>, the minor number rising by ``inc`` each.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from khib_build.errors import ConfigError

Fail = Callable[[str], ConfigError]
KINDS = {"f": "file", "d": "dir", "c": "chr", "b": "blk", "p": "fifo"}


@dataclass(frozen=True)
class TableEntry:
    """What a table says of one path, and where it says it."""

    path: str  # relative to the image root, no leading slash
    kind: str  # file, dir, chr, blk, fifo
    mode: int  # permission bits, setuid/setgid/sticky included
    uid: int
    gid: int
    rdev: tuple[int, int]
    where: str  # "file:line"

    def same_as(self, other: TableEntry) -> bool:
        return (self.kind, self.mode, self.uid, self.gid, self.rdev) == (
            other.kind, other.mode, other.uid, other.gid, other.rdev)


def image_path(text: str, fail: Fail) -> str:
    """Normalise an absolute or relative image path; refuse one that escapes the root."""
    norm = posixpath.normpath("/" + text.strip())
    if ".." in text.split("/") or norm == "/":
        raise fail(f"path {text!r} is not inside the image")
    return norm.lstrip("/")


def parse_table(path: Path) -> list[TableEntry]:
    """Read one table; every error names the file and line."""
    entries: list[TableEntry] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue

        def fail(message: str, number: int = number) -> ConfigError:
            return ConfigError(path, number, message)

        columns = line.split()
        if len(columns) != 10:
            raise fail(f"expected 10 columns (name type mode uid gid major minor start inc "
                       f"count), got {len(columns)}")
        name, kind = columns[0], columns[1]
        if kind not in KINDS:
            raise fail(f"unknown type {kind!r}; expected one of {', '.join(KINDS)}")
        mode, uid, gid = number_in(columns[2], 8, fail), number_in(columns[3], 10, fail), \
            number_in(columns[4], 10, fail)
        if mode > 0o7777:
            raise fail(f"mode {columns[2]} has bits beyond 07777")
        major, minor, start, inc, count = (
            number_in(c, 10, fail, dash=0) for c in columns[5:10])
        base = image_path(name, fail)
        where = f"{path}:{number}"
        if kind in "cb" and count:
            for i in range(count):
                entries.append(TableEntry(f"{base}{start + i}", KINDS[kind], mode, uid, gid,
                                          (major, minor + i * inc), where))
        else:
            entries.append(TableEntry(base, KINDS[kind], mode, uid, gid, (major, minor), where))
    return entries


def number_in(text: str, base: int, fail: Fail, dash: int | None = None) -> int:
    if text == "-" and dash is not None:
        return dash
    try:
        value = int(text, base)
    except ValueError:
        raise fail(f"expected a number, got {text!r}") from None
    if value < 0:
        raise fail(f"expected a non-negative number, got {text!r}")
    return value


def merge_tables(paths: list[Path]) -> dict[str, TableEntry]:
    """All tables' entries by path; two different definitions of one path are an error."""
    merged: dict[str, TableEntry] = {}
    for path in paths:
        for entry in parse_table(path):
            previous = merged.get(entry.path)
            if previous and not previous.same_as(entry):
                file, line = entry.where.rsplit(":", 1)
                raise ConfigError(file, int(line), f"/{entry.path} is defined differently "
                                  f"at {previous.where}")
            merged[entry.path] = entry
    return merged
