"""Read an image back: each segment's entries, read with libarchive."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import libarchive

from khib_build.errors import KhibError
from khib_build.image.segments import Segment, segments


@dataclass(frozen=True)
class Row:
    """What an image says of one entry."""

    type: str  # ls-style: - d l c b p s
    mode: int
    uid: int
    gid: int
    size: int
    path: str
    target: str  # a symlink's target, or the path a hard link shares data with
    rdev: tuple[int, int]
    sha256: str  # of a regular file's data ("" for other entries)

    def text(self) -> str:
        perms = stat.filemode(self.mode)
        size = f"{self.rdev[0]},{self.rdev[1]}" if self.type in "cb" else str(self.size)
        arrow = f" -> {self.target}" if self.type == "l" else (
            f" link to {self.target}" if self.target else "")
        return f"{perms} {self.uid:>5} {self.gid:>5} {size:>10} {self.path}{arrow}"

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class SegmentListing:
    index: int
    offset: int
    compression: str
    rows: list[Row]

    def as_dict(self) -> dict[str, object]:
        return {"index": self.index, "offset": self.offset, "compression": self.compression,
                "entries": [row.as_dict() for row in self.rows]}


def read_rows(segment: Segment) -> list[Row]:
    rows: list[Row] = []
    try:
        with libarchive.file_reader(str(segment.cpio)) as archive:
            for entry in archive:
                digest = hashlib.sha256()
                for block in entry.get_blocks():
                    digest.update(block)
                kind = stat.filemode(entry.mode)[0]
                target = entry.linkpath or ""
                rows.append(Row(kind, entry.mode, entry.uid, entry.gid, entry.size or 0,
                                entry.pathname, target, (entry.rdevmajor, entry.rdevminor),
                                digest.hexdigest() if kind == "-" else ""))
    except libarchive.ArchiveError as exc:
        raise KhibError(f"segment {segment.index}: not a readable cpio archive: {exc.msg}"
                        ) from None
    return share_link_data(rows)


def share_link_data(rows: list[Row]) -> list[Row]:
    """Give every member of a hard-link group the size and digest of the data they share.

    In newc the data travels with one member (the last, as khib-build and gen_init_cpio
    write it); the others carry none, yet each path holds that data once unpacked.
    """
    groups: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        if row.type == "-":
            groups.setdefault(row.target or row.path, []).append(index)
    for members in groups.values():
        if len(members) > 1:
            carrier = max(members, key=lambda i: rows[i].size)
            for i in members:
                rows[i] = replace(rows[i], size=rows[carrier].size, sha256=rows[carrier].sha256)
    return rows


def read_image(path: Path) -> list[SegmentListing]:
    """Every segment of an image with its entries, in image order."""
    return [SegmentListing(s.index, s.offset, s.compression, read_rows(s))
            for s in segments(path)]


def final_tree(listings: list[SegmentListing]) -> dict[str, Row]:
    """Path to entry as the kernel leaves it: a later segment's entry replaces an earlier one."""
    return {row.path: row for listing in listings for row in listing.rows}


def diff_trees(old: dict[str, Row], new: dict[str, Row]) -> list[str]:
    """One line per path that differs: ``+ path``, ``- path``, ``~ path: what changed``."""
    lines = []
    for path in sorted(old.keys() | new.keys(), key=os.fsencode):
        a, b = old.get(path), new.get(path)
        if a is None:
            lines.append(f"+ {path}")
        elif b is None:
            lines.append(f"- {path}")
        elif changed := differences(a, b):
            lines.append(f"~ {path}: {'; '.join(changed)}")
    return lines


def differences(a: Row, b: Row) -> list[str]:
    found = []
    if a.type != b.type:
        found.append(f"type {a.type} -> {b.type}")
    if a.mode != b.mode:
        found.append(f"mode {stat.filemode(a.mode)} -> {stat.filemode(b.mode)}")
    if (a.uid, a.gid) != (b.uid, b.gid):
        found.append(f"owner {a.uid}:{a.gid} -> {b.uid}:{b.gid}")
    if a.type == "-" and (a.sha256 != b.sha256 or a.size != b.size):
        found.append(f"content ({a.size} -> {b.size} bytes)")
    if a.type == "l" and a.target != b.target:
        found.append(f"target {a.target} -> {b.target}")
    if a.rdev != b.rdev:
        found.append(f"device {a.rdev[0]},{a.rdev[1]} -> {b.rdev[0]},{b.rdev[1]}")
    return found
