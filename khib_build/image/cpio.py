"""The packer: a tree (plus table entries) to a cpio ``newc`` archive as the kernel reads it.

Written to the kernel's buffer format (Documentation/driver-api/early-userspace/
buffer-format.rst) and in the manner of its ``usr/gen_init_cpio``: names relative with
no leading ``/`` or ``./``, sorted by byte order (so each directory precedes its
children), inode numbers assigned afresh from 721 in archive order, hard links sharing
one inode with the data carried by the last of them, and a ``TRAILER!!!`` padded to
512 bytes.  Ownership is 0:0 unless a table says otherwise; nodes come from tables, so
no privilege is needed.  File contents are streamed, never held whole.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, replace
from operator import itemgetter
from pathlib import Path
from typing import Protocol

from khib_build.errors import ConfigError, PackError
from khib_build.fsutil import atomic_output
from khib_build.image import limits, newc
from khib_build.image.compress import compressor
from khib_build.image.devtable import TableEntry
from khib_build.report import say

FIRST_INO = 721
MAX_MTIME = limits.FIELD_MAX
CHUNK = 1 << 20

TYPE_BITS = {
    "file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK, "chr": stat.S_IFCHR,
    "blk": stat.S_IFBLK, "fifo": stat.S_IFIFO, "sock": stat.S_IFSOCK,
}
KIND_OF_BITS = {bits: kind for kind, bits in TYPE_BITS.items()}


class Sink(Protocol):
    """Where archive bytes go.  A writer that can take a file descriptor's bytes without
    copying them through Python offers ``copy_from(fd, size)``, returning how many bytes
    it copied, or None when it cannot."""

    def write(self, data: bytes, /) -> object: ...


@dataclass(slots=True)
class Entry:
    """One archive member: what the header says, and where its content comes from."""

    path: str
    kind: str
    mode: int  # permission bits only (07777)
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    size: int = 0
    source: str | None = None  # the host path of a regular file's content
    target: str = ""  # a symlink's target
    rdev: tuple[int, int] = (0, 0)
    link_id: tuple[int, int] | None = None  # (st_dev, st_ino) of hard-linked files


def scan(root: Path) -> dict[str, Entry]:
    """Every path below ``root`` (not ``root`` itself), read with lstat: links are not
    followed. What the kernel cannot take (a name too long, a file of 4 GiB, more entries
    than an image holds) is refused here, naming the path."""
    entries: dict[str, Entry] = {}
    stack: list[tuple[str | Path, str]] = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        with os.scandir(folder) as items:
            for item in items:
                rel = prefix + item.name
                st = item.stat(follow_symlinks=False)
                entries[rel] = entry_from_stat(rel, item.path, st)
                if len(entries) > limits.IMAGE_ENTRIES:
                    raise ConfigError(root, None, f"more than {limits.IMAGE_ENTRIES} "
                                      "entries, the most an image holds")
                if item.is_dir(follow_symlinks=False):
                    stack.append((item.path, rel + "/"))
    return entries


def entry_from_stat(rel: str, path: str, st: os.stat_result) -> Entry:
    kind = KIND_OF_BITS.get(stat.S_IFMT(st.st_mode))
    if kind is None:
        raise PackError(f"{path}: unsupported file type")
    if problem := limits.name_problem(rel):
        raise ConfigError(path[:80] + "...", None, problem)
    entry = Entry(rel, kind, st.st_mode & 0o7777, mtime=int(st.st_mtime))
    if kind == "file":
        if problem := limits.size_problem(st.st_size):
            raise ConfigError(path, None, problem)
        entry.size, entry.source = st.st_size, path
        if st.st_nlink > 1:
            entry.link_id = (st.st_dev, st.st_ino)
    elif kind == "symlink":
        entry.target = os.readlink(path)
    elif kind in ("chr", "blk"):
        entry.rdev = (os.major(st.st_rdev), os.minor(st.st_rdev))
    return entry


def apply_table(entries: dict[str, Entry], table: dict[str, TableEntry]) -> None:
    """Give table entries their ownership and modes; create the ones the tree lacks.

    A device-table line adjusts what the tree has (or adds a folder, node or empty file);
    a file-list line defines its entry whole, content and link target included.
    """
    groups = {name: index for index, name in
              enumerate(sorted({row.link_group for row in table.values() if row.link_group}))}
    for path, row in sorted(table.items()):
        current = entries.get(path)
        if row.source is not None:
            st = row.source.stat()
            if problem := limits.size_problem(st.st_size):
                raise row.error(f"{row.source}: {problem}")
            link_id = (-1, groups[row.link_group]) if row.link_group else None
            entries[path] = Entry(path, "file", row.mode, row.uid, row.gid, int(st.st_mtime),
                                  st.st_size, str(row.source), link_id=link_id)
        elif current is None or row.target or row.kind in ("chr", "blk", "fifo", "sock"):
            entries[path] = Entry(path, row.kind, row.mode, row.uid, row.gid, rdev=row.rdev,
                                  target=row.target,
                                  mtime=current.mtime if current else 0)
        elif current.kind == row.kind:
            entries[path] = replace(current, mode=row.mode, uid=row.uid, gid=row.gid)
        else:
            raise row.error(f"/{path} is a {current.kind} in the tree, not a {row.kind}")
        add_parents(entries, path)


def add_parents(entries: dict[str, Entry], path: str) -> None:
    parts = path.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        parent = "/".join(parts[:depth])
        if parent not in entries:
            entries[parent] = Entry(parent, "dir", 0o755)
        elif entries[parent].kind != "dir":
            raise PackError(f"/{parent} is a {entries[parent].kind}, so /{path} cannot be in it")


PADDING = (b"", b"\0\0\0", b"\0\0", b"\0")  # by size % 4: up to the next multiple of 4


def header(ino: int, mode: int, uid: int, gid: int, nlink: int, mtime: int, size: int,
           rdev: tuple[int, int], name: bytes) -> bytes:
    """A newc header with its NUL-terminated name, padded to a multiple of four bytes.
    A value the kernel would misread is refused: never a corrupt header."""
    fields = (ino, mode, uid, gid, nlink, mtime, size, 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
    if (max(fields) > limits.FIELD_MAX or min(fields) < 0 or uid > limits.ID_MAX
            or gid > limits.ID_MAX or rdev[0] > limits.MAJOR_MAX or rdev[1] > limits.MINOR_MAX
            or len(name) >= limits.NAME_MAX):
        raise PackError(f"internal error: the header of {name[:80]!r} cannot hold "
                        f"{fields[:7]} {rdev}; nothing was written under the final name")
    head = newc.LAYOUT % fields + name
    return head + b"\0" * (4 - (len(head) & 3))  # the NUL, then padding


def clamp_mtime(entry: Entry, epoch: int) -> int:
    mtime = min(entry.mtime, epoch)
    if mtime < 0:
        return 0
    if mtime > MAX_MTIME:
        say(f"warning: /{entry.path}: mtime {mtime} does not fit in 32 bits; clamped")
        return MAX_MTIME
    return mtime


class Output:
    """Gathers small writes into large ones for the sink; counts what it was given."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.buffer = bytearray()
        self.written = 0
        self.copy_from = getattr(sink, "copy_from", None)

    def put(self, data: bytes) -> None:
        self.buffer += data
        self.written += len(data)
        if len(self.buffer) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.sink.write(self.buffer)
            self.buffer = bytearray()

    def put_member(self, head: bytes, source: str, size: int) -> None:
        """A header, then exactly ``size`` bytes of ``source`` and their padding; a file that
        changed size meanwhile is an error."""
        fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if size < CHUNK:
                data = os.read(fd, size + 1)  # a short read of a regular file means its end
                check_size(source, len(data), size)
                self.put(head + data + PADDING[size & 3])
                return
            self.put(head)
            self.flush()
            self.written += size
            copied = self.copy_from(fd, size) if self.copy_from else None
            if copied is None:
                copied = 0
                while copied < size and (block := os.read(fd, min(CHUNK, size - copied))):
                    self.sink.write(block)
                    copied += len(block)
            check_size(source, copied + len(os.read(fd, 1)), size)
        finally:
            os.close(fd)
        self.put(PADDING[size & 3])


def check_size(source: str, got: int, size: int) -> None:
    if got != size:
        change = "shrank" if got < size else "grew"
        raise PackError(f"{source}: {change} while being packed")


def write_archive(entries: Iterable[Entry], out: Sink, epoch: int) -> int:
    """Write ``entries`` in byte order of their paths, then the trailer; return bytes written."""
    ordered = sorted(((os.fsencode(e.path), e) for e in entries), key=itemgetter(0))
    groups: dict[tuple[int, int], list[Entry]] = {}
    for _, entry in ordered:
        if entry.kind == "file" and entry.link_id is not None:
            groups.setdefault(entry.link_id, []).append(entry)
    inodes: dict[tuple[int, int], int] = {}
    output = Output(out)
    fits = min(epoch, MAX_MTIME)  # mtimes up to this go in as they are
    for ino, (name, entry) in enumerate(ordered, FIRST_INO):
        group = groups.get(entry.link_id) if entry.link_id else None
        nlink, size = (2, 0) if entry.kind == "dir" else (1, entry.size)
        if group and len(group) > 1:
            ino = inodes.setdefault(entry.link_id, ino)
            nlink = len(group)
            size = entry.size if entry is group[-1] else 0
        data = entry.target.encode() if entry.kind == "symlink" else b""
        if entry.kind == "symlink":
            size = len(data)
        mtime = entry.mtime if 0 <= entry.mtime <= fits else clamp_mtime(entry, epoch)
        head = header(ino, TYPE_BITS[entry.kind] | entry.mode, entry.uid, entry.gid, nlink,
                      mtime, size, entry.rdev, name)
        if entry.kind == "file" and size:
            assert entry.source is not None
            output.put_member(head, entry.source, size)
        else:
            output.put(head + data + PADDING[size & 3])
    trailer = header(0, 0, 0, 0, 1, 0, 0, (0, 0), newc.TRAILER)
    output.put(trailer + b"\0" * (-(output.written + len(trailer)) % 512))
    output.flush()
    return output.written


def pack_tree(root: Path, tables: dict[str, TableEntry], output: Path, fmt: str,
              level: int | None, epoch: int, early: Path | None = None) -> None:
    """Pack ``root`` with ``tables`` applied into ``output``, compressed, written atomically.

    With ``early``, that folder goes first as an uncompressed segment with its own
    trailer (padded to 512 bytes, so the compressed segment starts 4-byte aligned).
    """
    entries = scan(root)
    apply_table(entries, tables)
    with atomic_output(output) as raw:
        if early is not None:
            write_archive(scan(early).values(), raw, epoch)
        stream = compressor(raw, fmt, level)
        write_archive(entries.values(), stream, epoch)
        stream.close()
