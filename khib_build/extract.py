"""Unpack source archives with libarchive, refusing anything that would escape."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import libarchive
import libarchive.extract as lae

from khib_build.errors import KhibError

# No "..", no absolute paths, no writing through symlinks; keep modes and mtimes, never owners.
SECURE_FLAGS = (
    lae.EXTRACT_SECURE_NODOTDOT
    | lae.EXTRACT_SECURE_NOABSOLUTEPATHS
    | lae.EXTRACT_SECURE_SYMLINKS
    | lae.EXTRACT_PERM
    | lae.EXTRACT_TIME
)
# libarchive writes relative to the working directory, which is process-wide.
_CWD_LOCK = threading.Lock()


class ExtractError(KhibError):
    """An archive that cannot be unpacked safely."""


def extract(archive: Path, dest: Path) -> Path:
    """Unpack a source archive into ``dest``; return its single top folder, if any."""
    unpack(archive, dest, refused_nodes)
    top = list(dest.iterdir())
    return top[0] if len(top) == 1 and top[0].is_dir() else dest


def unpack(archive: Path, dest: Path, on_node: Callable[[Path, str], bool]) -> None:
    """Unpack ``archive`` into ``dest`` securely; ``on_node`` says whether to make a node."""
    dest.mkdir(parents=True, exist_ok=True)
    with _CWD_LOCK:
        previous = os.getcwd()
        os.chdir(dest)
        try:
            with libarchive.file_reader(str(archive)) as entries:
                kept = (e for e in entries
                        if not (e.isblk or e.ischr) or on_node(archive, e.pathname))
                lae.extract_entries(kept, SECURE_FLAGS)
        except libarchive.ArchiveError as exc:
            raise ExtractError(f"{archive.name}: cannot unpack: {exc.msg}") from None
        finally:
            os.chdir(previous)


def refused_nodes(archive: Path, name: str) -> bool:
    """Source archives never need device nodes: one is an error."""
    raise ExtractError(f"{archive.name}: refusing device node entry {name!r}")
