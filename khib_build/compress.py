"""Compressed writers for the image, each producing a stream the kernel unpacks."""

from __future__ import annotations

import gzip
from typing import BinaryIO

from khib_build.errors import UsageError

FORMATS = ("gzip", "none")


def compressor(raw: BinaryIO, fmt: str, level: int) -> BinaryIO:
    """Wrap ``raw`` so what is written to the result lands compressed in ``raw``.

    Closing the result finishes the stream but leaves ``raw`` open.  gzip output
    carries no file name and a zero timestamp, so it depends on the bytes alone.
    """
    if fmt == "gzip":
        return gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=level, mtime=0)
    if fmt == "none":
        return _Uncompressed(raw)
    raise UsageError(f"unknown compression {fmt!r}; expected one of {', '.join(FORMATS)}")


class _Uncompressed:
    """``raw`` as it is, except that closing it does not close ``raw``."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw

    def write(self, data: bytes) -> int:
        return self.raw.write(data)

    def close(self) -> None:
        self.raw.flush()

    def __enter__(self) -> _Uncompressed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
