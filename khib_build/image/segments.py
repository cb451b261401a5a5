"""Split an image into its segments, as the kernel does, and decompress each.

An initramfs is a sequence of segments: uncompressed cpio archives (starting on a
4-byte boundary) and compressed streams, with zero bytes allowed between them.  Each
segment is yielded as a temporary file holding its plain cpio bytes, so readers such as
libarchive see one archive at a time.  Memory stays flat: data moves in 1 MiB blocks.
"""

from __future__ import annotations

import bz2
import lzma
import struct
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import lz4.block
import zstandard

from khib_build.errors import KhibError
from khib_build.image import newc
from khib_build.image.compress import LZ4_CHUNK, LZ4_LEGACY_MAGIC
from khib_build.settings.compression import FORMATS

BLOCK = 1 << 20
LZ4_MAX_CHUNK = LZ4_CHUNK + LZ4_CHUNK // 255 + 16  # LZ4_compressBound of a full chunk


class ImageError(KhibError):
    """An image the kernel would not unpack whole."""


@dataclass(frozen=True)
class Segment:
    index: int
    offset: int  # where it starts in the image
    compression: str
    cpio: Path  # its plain cpio bytes


class Decompressor(Protocol):
    eof: bool
    unused_data: bytes

    def decompress(self, data: bytes) -> bytes: ...


class Reader:
    """The image with a pushback buffer, so each segment ends exactly where its data does."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.pending = b""
        self.offset = 0  # of the first byte not yet consumed

    def read(self, size: int = BLOCK) -> bytes:
        if self.pending:
            data, self.pending = self.pending[:size], self.pending[size:]
        else:
            data = self.handle.read(size)
        self.offset += len(data)
        return data

    def exact(self, size: int) -> bytes:
        data = b""
        while len(data) < size and (block := self.read(size - len(data))):
            data += block
        return data

    def unread(self, data: bytes) -> None:
        self.pending = data + self.pending
        self.offset -= len(data)

    def skip_zeros(self) -> bool:
        """Consume zero padding; False at the end of the image."""
        while block := self.read():
            stripped = block.lstrip(b"\0")
            if stripped:
                self.unread(stripped)
                return True
        return False


def detect(head: bytes) -> str | None:
    for name, fmt in FORMATS.items():
        if head.startswith(fmt.magic):
            return name
    return None


def segments(image: Path) -> Iterator[Segment]:
    """Each segment of ``image`` in order; its temporary file lives until the next one."""
    try:
        handle = image.open("rb")
    except OSError as exc:
        raise ImageError(f"cannot read the image {image}: {exc.strerror or exc}") from None
    with handle:
        reader = Reader(handle)
        index = 0
        while reader.skip_zeros():
            start = reader.offset
            head = reader.exact(8)
            reader.unread(head)
            kind = detect(head)
            if kind is None:
                raise ImageError(f"{image}: offset {start}: neither cpio nor a compressed "
                                 f"stream the kernel knows (starts {head[:6].hex()})")
            if kind == "none" and start % 4:
                raise ImageError(f"{image}: offset {start}: uncompressed cpio must start on a "
                                 "4-byte boundary")
            with tempfile.NamedTemporaryFile(prefix="khib-segment-") as plain:
                if kind == "none":
                    copy_cpio(reader, plain)
                elif kind == "lz4":
                    copy_lz4(reader, plain)
                else:
                    copy_stream(reader, plain, decompressor(kind), kind)
                plain.flush()
                yield Segment(index, start, kind, Path(plain.name))
            index += 1


def decompressor(kind: str) -> Decompressor:
    if kind == "gzip":
        return _Zlib(zlib.decompressobj(31))
    if kind == "xz":
        return lzma.LZMADecompressor(lzma.FORMAT_XZ)
    if kind == "lzma":
        return lzma.LZMADecompressor(lzma.FORMAT_ALONE)
    if kind == "bzip2":
        return bz2.BZ2Decompressor()
    return zstandard.ZstdDecompressor().decompressobj()


class _Zlib:
    """zlib's decompressor with the ``eof`` the others have."""

    def __init__(self, engine: zlib._Decompress) -> None:
        self.engine = engine

    @property
    def eof(self) -> bool:
        return self.engine.eof

    @property
    def unused_data(self) -> bytes:
        return self.engine.unused_data

    def decompress(self, data: bytes) -> bytes:
        return self.engine.decompress(data)


def copy_stream(reader: Reader, out: BinaryIO, engine: Decompressor, kind: str) -> None:
    try:
        while not engine.eof:
            block = reader.read()
            if not block:
                raise ImageError(f"the {kind} stream is truncated")
            out.write(engine.decompress(block))
    except (zlib.error, lzma.LZMAError, OSError, zstandard.ZstdError) as exc:
        raise ImageError(f"corrupt {kind} stream: {exc}") from None
    reader.unread(engine.unused_data)


def copy_lz4(reader: Reader, out: BinaryIO) -> None:
    """Legacy lz4: chunks until a zero size, the end of the image, or what is not a chunk."""
    reader.exact(4)  # the magic
    while True:
        raw = reader.exact(4)
        if len(raw) < 4:
            reader.unread(raw)
            return
        size = struct.unpack("<I", raw)[0]
        if size == LZ4_LEGACY_MAGIC:
            continue
        if size == 0 or size > LZ4_MAX_CHUNK:
            reader.unread(raw)
            return
        data = reader.exact(size)
        try:
            out.write(lz4.block.decompress(data, uncompressed_size=LZ4_CHUNK))
        except lz4.block.LZ4BlockError as exc:
            raise ImageError(f"corrupt lz4 chunk: {exc}") from None


def copy_cpio(reader: Reader, out: BinaryIO) -> None:
    """One uncompressed newc archive, through its trailer and the padding after it."""
    while True:
        raw = reader.exact(newc.HEADER_SIZE)
        try:
            header = newc.read_header(raw)
        except newc.NewcError as exc:
            raise ImageError(str(exc)) from None
        name = reader.exact(header.name_span)
        body = header.data_span
        out.write(raw + name)
        while body:
            block = reader.read(min(body, BLOCK))
            if not block:
                raise ImageError("truncated cpio member")
            out.write(block)
            body -= len(block)
        if newc.is_trailer(header, name):
            return

