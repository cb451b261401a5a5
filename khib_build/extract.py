"""Unpack source archives with libarchive, refusing anything that would escape."""

from __future__ import annotations

import os
import threading
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
    """Unpack ``archive`` into ``dest``; return the source root (its single top folder, if any)."""
    dest.mkdir(parents=True, exist_ok=True)
    with _CWD_LOCK:
        previous = os.getcwd()
        os.chdir(dest)
        try:
            with libarchive.file_reader(str(archive)) as entries:
                lae.extract_entries(checked(entries, archive), SECURE_FLAGS)
        except libarchive.ArchiveError as exc:
            raise ExtractError(f"{archive.name}: cannot unpack: {exc.msg}") from None
        finally:
            os.chdir(previous)
    top = list(dest.iterdir())
    return top[0] if len(top) == 1 and top[0].is_dir() else dest


def checked(entries: libarchive.read.ArchiveRead, archive: Path):
    """Pass entries through, refusing the kinds a source tarball never needs."""
    for entry in entries:
        if entry.isblk or entry.ischr:
            raise ExtractError(f"{archive.name}: refusing device node entry {entry.pathname!r}")
        yield entry
