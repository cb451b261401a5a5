"""Unpack source archives with libarchive, refusing anything that would escape."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import libarchive
import libarchive.extract as lae

from khib_build import cancel
from khib_build.errors import KhibError

# No "..", no absolute paths, no writing through symlinks; keep modes and mtimes, never owners.
SECURE_FLAGS = (
    lae.EXTRACT_SECURE_NODOTDOT
    | lae.EXTRACT_SECURE_NOABSOLUTEPATHS
    | lae.EXTRACT_SECURE_SYMLINKS
    | lae.EXTRACT_PERM
    | lae.EXTRACT_TIME
)
DEFAULT_EXPANSION = 20  # a kernel source .tar.xz unpacks to about 9 times its size
SLACK = 1 << 20
# libarchive writes relative to the working directory, which is process-wide.
_CWD_LOCK = threading.Lock()


class ExtractError(KhibError):
    """An archive that cannot be unpacked safely."""


def extract(archive: Path, dest: Path, max_expansion: int = DEFAULT_EXPANSION) -> Path:
    """Unpack a source archive into ``dest``; return its single top folder, if any.

    An archive whose entries add up to more than ``max_expansion`` times its own size
    (plus 1 MiB) is refused as a decompression bomb before that much is written.
    """
    limit = max_expansion * archive.stat().st_size + SLACK
    unpack(archive, dest, refused_nodes, limit)
    top = list(dest.iterdir())
    return top[0] if len(top) == 1 and top[0].is_dir() else dest


def unpack(archive: Path, dest: Path, on_node: Callable[[Path, str], bool],
           limit: int | None = None) -> None:
    """Unpack ``archive`` into ``dest`` securely; ``on_node`` says whether to make a node.

    Every refusal names the entry: libarchive's own (a "..", an absolute path, writing
    through a symlink, a hard link leading out) and ours (nodes, the expansion limit).
    """
    archive = archive.resolve()  # opened after the chdir below
    dest.mkdir(parents=True, exist_ok=True)
    current = ""

    def admitted(entries: libarchive.read.ArchiveRead) -> Iterator[libarchive.ArchiveEntry]:
        nonlocal current
        total = 0
        for entry in entries:
            cancel.check()
            current = entry.pathname + (f" -> {entry.linkpath}" if entry.linkpath else "")
            total += entry.size or 0
            if limit is not None and total > limit:
                raise ExtractError(f"{archive.name}: entry {current!r} takes the unpacked size "
                                   f"past {limit} bytes: refused as a decompression bomb (a "
                                   "recipe may raise max_expansion)")
            if (entry.isblk or entry.ischr) and not on_node(archive, entry.pathname):
                continue
            yield entry

    with _CWD_LOCK:
        previous = os.getcwd()
        os.chdir(dest)
        try:
            with libarchive.file_reader(str(archive)) as entries:
                lae.extract_entries(admitted(entries), SECURE_FLAGS)
        except libarchive.ArchiveError as exc:
            where = f" at entry {current!r}" if current else ""
            raise ExtractError(f"{archive.name}: refused{where}: {exc.msg}") from None
        finally:
            os.chdir(previous)


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
