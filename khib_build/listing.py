"""Read an image back with libarchive: one row per entry."""

from __future__ import annotations

import stat
from dataclasses import asdict, dataclass
from pathlib import Path

import libarchive

from khib_build.errors import KhibError


@dataclass(frozen=True)
class Row:
    """What an image says of one entry."""

    type: str  # ls-style: - d l c b p s
    mode: int
    uid: int
    gid: int
    size: int
    path: str
    target: str  # symlink or hard link target
    rdev: tuple[int, int]

    def text(self) -> str:
        perms = stat.filemode(self.mode)
        size = f"{self.rdev[0]},{self.rdev[1]}" if self.type in "cb" else str(self.size)
        arrow = f" -> {self.target}" if self.target else ""
        return f"{perms} {self.uid:>5} {self.gid:>5} {size:>10} {self.path}{arrow}"

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def read_image(path: Path) -> list[Row]:
    """Every entry of a (compressed) cpio image, in archive order."""
    rows: list[Row] = []
    try:
        with libarchive.file_reader(str(path)) as archive:
            for entry in archive:
                mode = entry.mode
                kind = stat.filemode(mode)[0]
                target = entry.linkpath or ""
                rows.append(Row(kind, mode, entry.uid, entry.gid, entry.size or 0,
                                entry.pathname, target, (entry.rdevmajor, entry.rdevminor)))
    except libarchive.ArchiveError as exc:
        raise KhibError(f"{path}: not a readable image: {exc.msg}") from None
    return rows
