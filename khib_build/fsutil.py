"""Atomic outputs: a file appears under its final name complete, or not at all."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
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
