"""Atomic outputs: a file or a folder appears under its final name complete, or not at all."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_output(path: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Write to a temporary file beside ``path``; rename it into place only on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # The name is chosen before the file exists, so that an interrupt arriving just after
    # it is created still finds it to remove (mkstemp leaves a window where it cannot).
    temporary = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_atomically(path: Path, data: bytes) -> None:
    with atomic_output(path) as handle:
        handle.write(data)


@contextlib.contextmanager
def built_beside(final: Path, landed: Callable[[Path], bool] = Path.is_dir) -> Iterator[Path]:
    """A new ``.tmp-*`` folder beside ``final`` to fill. When the block ends without an
    error it is renamed to ``final``; if that fails because another run's twin landed
    there first (``landed(final)``), the twin stays. Removed in every other case."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
    try:
        yield staging
        try:
            staging.rename(final)
        except OSError:
            if not landed(final):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
