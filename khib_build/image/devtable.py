"""Tables of entries: ownership, modes and nodes without root, in two formats.

Buildroot-style device/permission tables: each line is ``name type mode uid gid major
minor start inc count`` (``-`` where a column does not apply); ``#`` starts a comment.
Types: ``f`` file, ``d`` directory, ``c`` character device, ``b`` block device, ``p``
fifo.  With a count, a device line
makes name<start> … name<start+count-1>, the minor number rising by ``inc`` each.

The kernel's ``gen_init_cpio`` file lists: ``file NAME LOCATION MODE UID GID [LINKS…]``,
``dir NAME MODE UID GID``, ``nod NAME MODE UID GID c|b MAJOR MINOR``, ``slink NAME TARGET
MODE UID GID``, ``pipe NAME MODE UID GID``, ``sock NAME MODE UID GID``; a relative LOCATION
is relative to the list's folder.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from khib_build.errors import ConfigError
from khib_build.fsutil import read_text
from khib_build.image import limits

Fail = Callable[[str], ConfigError]
KINDS = {"f": "file", "d": "dir", "c": "chr", "b": "blk", "p": "fifo"}  # device tables


@dataclass(frozen=True)
class TableEntry:
    """What a table says of one path, and where it says it."""

    path: str  # relative to the image root, no leading slash
    kind: str  # file, dir, chr, blk, fifo
    mode: int  # permission bits, setuid/setgid/sticky included
    uid: int
    gid: int
    rdev: tuple[int, int]
    where: str = field(compare=False)  # "file:line": two lines may define one entry alike
    source: Path | None = None  # a file's content, from a file list
    target: str = ""  # a symlink's target
    link_group: str = ""  # names listed together on one file line share one inode

    def error(self, message: str) -> ConfigError:
        """An error located at the line that defines this entry."""
        file, line = self.where.rsplit(":", 1)
        return ConfigError(file, int(line), message)


def image_path(text: str, fail: Fail) -> str:
    """Normalise an absolute or relative image path; refuse one that escapes the root."""
    norm = posixpath.normpath("/" + text.strip())
    if ".." in text.split("/") or norm == "/":
        raise fail(f"path {text!r} is not inside the image")
    return norm.lstrip("/")


def table_lines(path: Path) -> Iterator[tuple[list[str], Fail, str]]:
    """The columns of each line that is not blank or a comment, with its error maker."""
    for number, raw in enumerate(read_text(path).splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if line:
            def fail(message: str, number: int = number) -> ConfigError:
                return ConfigError(path, number, message)

            yield line.split(), fail, f"{path}:{number}"


def parse_table(path: Path) -> list[TableEntry]:
    """Read one device table; every error names the file and line."""
    entries: list[TableEntry] = []
    for columns, fail, where in table_lines(path):
        if len(columns) != 10:
            raise fail(f"expected 10 columns (name type mode uid gid major minor start inc "
                       f"count), got {len(columns)}")
        name, kind = columns[0], columns[1]
        if kind not in KINDS:
            raise fail(f"unknown type {kind!r}; expected one of {', '.join(KINDS)}")
        mode, uid, gid = ownership(columns[2:5], fail)
        major, minor, start, inc, count = (
            number_in(c, 10, fail, dash=0) for c in columns[5:10])
        base = image_path(name, fail)
        if kind in "cb" and count:
            if count > limits.TABLE_LINE_ENTRIES:
                raise fail(f"count {count}: one line makes at most "
                           f"{limits.TABLE_LINE_ENTRIES} entries")
            check_device(major, minor + (count - 1) * inc, fail)
            too_many(len(entries) + count, fail)
            for i in range(count):
                entries.append(TableEntry(checked_name(f"{base}{start + i}", fail),
                                          KINDS[kind], mode, uid, gid, (major, minor + i * inc),
                                          where))
        else:
            check_device(major, minor, fail)
            entries.append(TableEntry(checked_name(base, fail), KINDS[kind], mode, uid, gid,
                                      (major, minor), where))
    return entries


def ownership(columns: Sequence[str], fail: Fail) -> tuple[int, int, int]:
    """Mode (octal), uid and gid, each checked against what the kernel takes."""
    mode, uid, gid = (number_in(columns[0], 8, fail), number_in(columns[1], 10, fail),
                      number_in(columns[2], 10, fail))
    if mode > limits.MODE_BITS:
        raise fail(f"mode {columns[0]} has bits beyond 07777")
    for what, value in (("uid", uid), ("gid", gid)):
        if problem := limits.id_problem(what, value):
            raise fail(problem)
    return mode, uid, gid


def check_device(major: int, minor: int, fail: Fail) -> None:
    if problem := limits.device_problem(major, minor):
        raise fail(problem)


def too_many(total: int, fail: Fail) -> None:
    if total > limits.IMAGE_ENTRIES:
        raise fail(f"the table makes more than {limits.IMAGE_ENTRIES} entries, the most an "
                   "image holds")


def checked_name(path: str, fail: Fail) -> str:
    if problem := limits.name_problem(path):
        raise fail(f"/{path[:60]}...: {problem}")
    return path


LIST_COLUMNS = {"file": 6, "dir": 5, "nod": 8, "slink": 6, "pipe": 5, "sock": 5}
LIST_KINDS = {"dir": "dir", "pipe": "fifo", "sock": "sock", "slink": "symlink"}


def parse_file_list(path: Path) -> list[TableEntry]:
    """Read a gen_init_cpio file list; every error names the file and line."""
    entries: list[TableEntry] = []
    for columns, fail, where in table_lines(path):
        kind = columns[0]
        if kind not in LIST_COLUMNS:
            raise fail(f"unknown type {kind!r}; expected one of {', '.join(LIST_COLUMNS)}")
        want = LIST_COLUMNS[kind]
        if len(columns) < want or (kind != "file" and len(columns) > want):
            raise fail(f"'{kind}' takes {want - 1} fields, got {len(columns) - 1}")
        name = checked_name(image_path(columns[1], fail), fail)
        at = 3 if kind in ("file", "slink") else 2
        mode, uid, gid = ownership(columns[at:at + 3], fail)
        if kind == "file":
            source = (path.parent / columns[2]).resolve()
            if not source.is_file():
                raise fail(f"file {columns[2]!r} does not exist (looked for {source})")
            group = name if len(columns) > want else ""
            too_many(len(entries) + len(columns) - want + 1, fail)
            for link in [name] + [checked_name(image_path(c, fail), fail)
                                  for c in columns[want:]]:
                entries.append(TableEntry(link, "file", mode, uid, gid, (0, 0), where,
                                          source=source, link_group=group))
        elif kind == "nod":
            if columns[5] not in ("c", "b"):
                raise fail(f"device type {columns[5]!r}: expected c or b")
            rdev = (number_in(columns[6], 10, fail), number_in(columns[7], 10, fail))
            check_device(*rdev, fail)
            entries.append(TableEntry(name, "chr" if columns[5] == "c" else "blk", mode, uid,
                                      gid, rdev, where))
        else:
            target = columns[2] if kind == "slink" else ""
            entries.append(TableEntry(name, LIST_KINDS[kind], mode, uid, gid, (0, 0), where,
                                      target=target))
    return entries


def number_in(text: str, base: int, fail: Fail, dash: int | None = None) -> int:
    if text == "-" and dash is not None:
        return dash
    try:
        value = int(text, base)
    except ValueError:
        what = "an octal mode" if base == 8 else "a number"
        raise fail(f"expected {what}, got {text!r}") from None
    if value < 0:
        raise fail(f"expected a non-negative number, got {text!r}")
    return value


def merge_tables(device_tables: Sequence[Path], file_lists: Sequence[Path] = ()
                 ) -> dict[str, TableEntry]:
    """All tables' entries by path; two different definitions of one path are an error."""
    merged: dict[str, TableEntry] = {}
    parsed = [parse_table(p) for p in device_tables] + [parse_file_list(p) for p in file_lists]
    for entries in parsed:
        for entry in entries:
            previous = merged.get(entry.path)
            if previous and previous != entry:
                raise entry.error(f"/{entry.path} is defined differently at {previous.where}")
            merged[entry.path] = entry
            if len(merged) > limits.IMAGE_ENTRIES:
                raise entry.error(f"the tables make more than {limits.IMAGE_ENTRIES} entries, "
                                  "the most an image holds")
    return merged
