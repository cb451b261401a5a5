"""Unpack source archives with libarchive, refusing anything that would escape."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import libarchive
import libarchive.extract as lae

from khib_build import cancel
from khib_build.errors import KhibError
from khib_build.fsutil import CHUNK

# Entries are placed under the destination by absolute path, after their own path was
# checked (relative, no ".."); libarchive refuses ".." and writing through symlinks again.
# Modes and mtimes are kept, never owners.
SECURE_FLAGS = (
    lae.EXTRACT_SECURE_NODOTDOT
    | lae.EXTRACT_SECURE_SYMLINKS
    | lae.EXTRACT_PERM
    | lae.EXTRACT_TIME
)
SLACK = 1 << 20
Out = TypeVar("Out", bound=IO[bytes])


class ExtractError(KhibError):
    """An archive that cannot be unpacked safely."""


def extract(archive: Path, dest: Path, max_expansion: int) -> Path:
    """Unpack a source archive into ``dest``; return its single top folder, if any.

    An archive whose entries add up to more than ``max_expansion`` times its own size
    (plus 1 MiB) is refused as a decompression bomb before that much is written.
    """
    limit = max_expansion * archive.stat().st_size + SLACK
    unpack(archive, dest, refused_nodes, limit)
    top = list(dest.iterdir())
    return top[0] if len(top) == 1 and top[0].is_dir() else dest


class Blocks(io.RawIOBase):
    """A readable stream over an iterator of byte blocks (an archive member's data), for
    libarchive to read an archive inside an archive without holding it in memory."""

    def __init__(self, blocks: Iterator[bytes]) -> None:
        super().__init__()
        self.blocks = blocks
        self.rest = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self.rest:
            self.rest = memoryview(next(self.blocks, b""))
        size = min(len(buffer), len(self.rest))
        memoryview(buffer).cast("B")[:size] = self.rest[:size]
        self.rest = self.rest[size:]
        return size


@contextlib.contextmanager
def deb_part(deb: Path, member: str = "data.tar") -> Iterator[tuple[str, Blocks]]:
    """The name and a stream of a Debian package's data.tar (or control.tar) member."""
    try:
        with libarchive.file_reader(str(deb)) as members:
            for entry in members:
                if entry.pathname.startswith(member):
                    yield entry.pathname, Blocks(entry.get_blocks())
                    return
    except libarchive.ArchiveError as exc:
        raise ExtractError(f"{deb.name}: not a Debian package: {exc.msg}") from None
    raise ExtractError(f"{deb.name}: not a Debian package: it has no {member} member")


def unpack_deb(deb: Path, dest: Path, max_expansion: int) -> None:
    """Unpack a Debian package's files into ``dest``, as ``dpkg-deb -x`` would, with the
    checks of :func:`unpack`."""
    with deb_part(deb) as (name, data):
        inner = dest.parent / f".{deb.name}.{name}"
        try:
            with inner.open("wb") as out:
                shutil.copyfileobj(data, out, CHUNK)
            unpack(inner, dest, refused_nodes, max_expansion * deb.stat().st_size + SLACK)
        finally:
            inner.unlink(missing_ok=True)


def deb_control(deb: Path) -> dict[str, str]:
    """The fields of a Debian package's control file."""
    found = deb_file(deb, "control", io.BytesIO(), "control.tar")
    if found is None:
        raise ExtractError(f"{deb.name}: its control.tar has no control file")
    return {k.strip(): v.strip() for k, v in (
        line.split(":", 1) for line in found.getvalue().decode(errors="replace").splitlines()
        if ":" in line and not line.startswith(" "))}


def deb_member(deb: Path, wanted: str) -> bytes | None:
    """One regular file of a Debian package's data (``./`` prefix optional), or None."""
    found = deb_file(deb, wanted, io.BytesIO())
    return None if found is None else found.getvalue()


def deb_file(deb: Path, wanted: str, out: Out, member: str = "data.tar") -> Out | None:
    """Copy one regular file of a Debian package's data (``./`` prefix optional) into
    ``out`` a block at a time, the package read as a stream: memory stays flat whatever
    the file's size. ``out``, or None if the package has no such file."""
    with deb_part(deb, member) as (name, data):
        try:
            with libarchive.stream_reader(data, block_size=CHUNK) as entries:
                for entry in entries:
                    if entry.pathname.removeprefix("./") == wanted and entry.isfile:
                        for block in entry.get_blocks():
                            cancel.check()
                            out.write(block)
                        return out
        except libarchive.ArchiveError as exc:
            raise ExtractError(f"{deb.name}: its {name} cannot be read: {exc.msg}") from None
    return None


def unpack(archive: Path, dest: Path, on_node: Callable[[Path, str], bool],
           limit: int | None = None, remedy: str = "a recipe may raise max_expansion"
           ) -> None:
    """Unpack ``archive`` into ``dest`` securely; ``on_node`` says whether to make a node.

    Every refusal names the entry: libarchive's own (a "..", an absolute path, writing
    through a symlink, a hard link leading out) and ours (nodes, the expansion limit).
    """
    archive = archive.resolve()
    dest.mkdir(parents=True, exist_ok=True)
    base = os.fsencode(dest.resolve()) + b"/"  # no symlink above: libarchive checks each part
    current = ""

    def refuse(problem: str) -> ExtractError:
        return ExtractError(f"{archive.name}: refused at entry {current!r}: {problem}")

    def below(entry: libarchive.ArchiveEntry, name: str | bytes, what: str) -> bytes:
        """``name`` (relative, without ..) placed under dest, or the entry is refused."""
        raw = name if isinstance(name, bytes) else name.encode(
            getattr(entry, "header_codec", "utf-8"))  # (libarchive-c 2.9 always decodes UTF-8)
        if raw.startswith(b"/"):
            raise refuse(f"{what} is absolute")
        if b".." in raw.split(b"/"):
            raise refuse(f"{what} contains '..'")
        return base + raw

    def admitted(entries: libarchive.read.ArchiveRead) -> Iterator[libarchive.ArchiveEntry]:
        nonlocal current
        total = 0
        for entry in entries:
            cancel.check()
            current = entry.pathname + (f" -> {entry.linkpath}" if entry.linkpath else "")
            total += entry.size or 0
            if limit is not None and total > limit:
                raise ExtractError(f"{archive.name}: entry {current!r} takes the unpacked size "
                                   f"past {limit} bytes: refused as a decompression bomb "
                                   f"({remedy})")
            if (entry.isblk or entry.ischr) and not on_node(archive, entry.pathname):
                continue
            if entry.islnk and entry.linkpath == entry.pathname:
                continue  # a hard link to itself (kexec-tools has some): nothing to make
            if entry.islnk:  # a hard link names a path of the archive, placed the same way
                set_hard_link(entry, below(entry, entry.linkpath, "Hard link path"))
            entry.pathname = below(entry, entry.pathname, "Path")
            yield entry

    try:
        with libarchive.file_reader(str(archive)) as entries:
            lae.extract_entries(admitted(entries), SECURE_FLAGS)
    except libarchive.ArchiveError as exc:
        where = f" at entry {current!r}" if current else ""
        raise ExtractError(f"{archive.name}: refused{where}: {exc.msg}") from None


@functools.cache
def hard_link_updater() -> Callable[[object, bytes], int]:
    """libarchive's archive_entry_update_hardlink_utf8, through a handle of our own."""
    update = ctypes.CDLL(libarchive.ffi.libarchive_path).archive_entry_update_hardlink_utf8
    update.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    update.restype = ctypes.c_int
    return update  # type: ignore[no-any-return]


def set_hard_link(entry: libarchive.ArchiveEntry, target: bytes) -> None:
    """Point a hard link entry at ``target``: libarchive-c 3 and later have a setter;
    Debian 12's 2.9 has none, so libarchive is asked directly."""
    if getattr(type(entry).linkpath, "fset", None) is not None:
        entry.linkpath = target
    else:
        hard_link_updater()(entry._entry_p, target)


def refused_nodes(archive: Path, name: str) -> bool:
    """Source archives never need device nodes: one is an error."""
    raise ExtractError(f"{archive.name}: refusing device node entry {name!r}")


def source_members(source: Path, wanted: set[str]) -> dict[str, bytes]:
    """The named regular files of a source, by their path below its top: from a tree, or
    from a tarball's top folder without unpacking anything else."""
    if source.is_dir():
        return {name: (source / name).read_bytes() for name in wanted
                if (source / name).is_file()}
    found: dict[str, bytes] = {}
    with libarchive.file_reader(str(source)) as archive:
        for entry in archive:
            inner = entry.pathname.split("/", 1)[-1]
            if inner in wanted and entry.isfile:
                found[inner] = b"".join(entry.get_blocks())
    return found
