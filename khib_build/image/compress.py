"""Compressed writers for the image, each producing one stream the kernel unpacks.

Every format is written in-process, through Python's own modules or bindings, and
the output depends on the bytes and the level alone, never on the thread count:

* gzip: blocks of 128 KiB deflated in threads, each primed with the 32 KiB before it
  as dictionary and ended with a sync flush, joined into one member with one CRC (the
  way pigz does it); no file name, no timestamp.
* zstd: the binding's own multi-threaded compressor (always with threads >= 1, whose
  output does not depend on the count), with 4 MiB jobs so that two cores stay busy
  on images of a few MiB.
* lz4: the legacy frame format the kernel reads, assembled from independent 8 MiB
  ``lz4.block`` chunks compressed in threads, and ended by a zero chunk size.
* xz with a CRC32 check (the kernel refuses CRC64), lzma (the "alone" format), bzip2.

The thread pool and the zstd and lz4 bindings are imported when a format needs them:
an uncompressed pack, the benchmark's hot case, starts without them.
"""

from __future__ import annotations

import bz2
import lzma
import os
import struct
import zlib
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO, Protocol

from khib_build.settings.compression import FORMATS

if TYPE_CHECKING:
    from concurrent.futures import Future


class Writer(Protocol):
    """A sink for archive bytes; ``close`` ends the compressed stream, not the file below."""

    def write(self, data: bytes, /) -> object: ...

    def close(self) -> None: ...


GZIP_BLOCK = 128 * 1024
GZIP_WINDOW = 32 * 1024
ZSTD_JOB = 4 * 1024 * 1024  # fixed, so the output never depends on the thread count
LZ4_CHUNK = 8 * 1024 * 1024  # the legacy format's fixed uncompressed chunk size
LZ4_LEGACY_MAGIC = 0x184C2102


def threads() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def compressor(raw: BinaryIO, fmt: str, level: int | None = None) -> Writer:
    """A writer that compresses into ``raw`` (which it leaves open)."""
    chosen = FORMATS[fmt].check_level(level)
    if fmt == "gzip":
        return ParallelGzip(raw, chosen)
    if fmt == "zstd":
        import zstandard

        params = zstandard.ZstdCompressionParameters.from_level(
            chosen, threads=threads(), job_size=ZSTD_JOB)
        return zstandard.ZstdCompressor(compression_params=params).stream_writer(
            raw, closefd=False)
    if fmt == "lz4":
        return LegacyLz4(raw, chosen)
    if fmt == "xz":
        return Streaming(raw, lzma.LZMACompressor(lzma.FORMAT_XZ, check=lzma.CHECK_CRC32,
                                                  preset=chosen))
    if fmt == "lzma":
        return Streaming(raw, lzma.LZMACompressor(lzma.FORMAT_ALONE, preset=chosen))
    if fmt == "bzip2":
        return Streaming(raw, bz2.BZ2Compressor(chosen))
    return Streaming(raw, None)


class Streaming:
    """A one-thread compressor object (or none) writing through to ``raw``."""

    def __init__(self, raw: BinaryIO, engine: lzma.LZMACompressor | bz2.BZ2Compressor | None
                 ) -> None:
        self.raw, self.engine = raw, engine

    def write(self, data: bytes) -> None:
        self.raw.write(self.engine.compress(data) if self.engine else data)

    def close(self) -> None:
        if self.engine:
            self.raw.write(self.engine.flush())
        self.raw.flush()

    def copy_from(self, fd: int, size: int) -> int | None:
        """Uncompressed into a real file: copy in the kernel (sendfile), not through Python."""
        if self.engine is not None:
            return None
        try:
            out = self.raw.fileno()
        except (AttributeError, OSError):
            return None
        self.raw.flush()
        copied = 0
        while copied < size and (sent := os.sendfile(out, fd, None, size - copied)):
            copied += sent
        return copied


class Blocks:
    """Cut the input into fixed blocks, compress them in threads, write results in order."""

    def __init__(self, raw: BinaryIO, block_size: int) -> None:
        self.raw, self.block_size = raw, block_size
        self.buffer = bytearray()
        self.workers = threads()
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(self.workers)
        self.pending: deque[Future[bytes]] = deque()

    def compress_block(self, block: bytes, last: bool) -> Callable[[], bytes]:
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        self.buffer += data
        size = self.block_size
        if len(self.buffer) >= size:
            whole = len(self.buffer) - len(self.buffer) % size
            view = memoryview(self.buffer)
            for start in range(0, whole, size):
                self.submit(bytes(view[start:start + size]), last=False)
            view.release()
            del self.buffer[:whole]

    def submit(self, block: bytes, last: bool) -> None:
        self.pending.append(self.pool.submit(self.compress_block(block, last)))
        while len(self.pending) > 2 * self.workers:  # bounded memory: drain in order
            self.raw.write(self.pending.popleft().result())

    def finish(self) -> None:
        self.submit(bytes(self.buffer), last=True)
        self.buffer.clear()
        while self.pending:
            self.raw.write(self.pending.popleft().result())
        self.pool.shutdown()


class ParallelGzip(Blocks):
    """One gzip member from blocks deflated in parallel (pigz's method)."""

    def __init__(self, raw: BinaryIO, level: int) -> None:
        super().__init__(raw, GZIP_BLOCK)
        self.level = level
        self.crc = 0
        self.size = 0
        self.window = b""
        extra_flags = 2 if level == 9 else 4 if level == 1 else 0
        # Magic, deflate, no flags, mtime 0, extra flags, OS "Unix".
        raw.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + bytes([extra_flags, 3]))

    def compress_block(self, block: bytes, last: bool) -> Callable[[], bytes]:
        self.crc = zlib.crc32(block, self.crc)
        self.size += len(block)
        window, self.window = self.window, (self.window + block)[-GZIP_WINDOW:]
        level = self.level

        def deflate() -> bytes:
            engine = zlib.compressobj(level, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY,
                                      *([window] if window else []))
            return engine.compress(block) + engine.flush(
                zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)

        return deflate

    def close(self) -> None:
        self.finish()
        self.raw.write(struct.pack("<II", self.crc, self.size & 0xFFFFFFFF))
        self.raw.flush()


class LegacyLz4(Blocks):
    """The lz4 legacy frame: magic, then (size, block) chunks of 8 MiB input each."""

    def __init__(self, raw: BinaryIO, level: int) -> None:
        super().__init__(raw, LZ4_CHUNK)
        self.level = level
        raw.write(struct.pack("<I", LZ4_LEGACY_MAGIC))

    def compress_block(self, block: bytes, last: bool) -> Callable[[], bytes]:
        import lz4.block

        level = self.level

        def chunk() -> bytes:
            if not block:
                return b""
            data = lz4.block.compress(block, mode="high_compression", compression=level,
                                      store_size=False)
            return struct.pack("<I", len(data)) + data

        return chunk

    def close(self) -> None:
        self.finish()
        # A zero chunk size ends the stream where a reader would otherwise take whatever
        # follows (such as an appended segment) for one more chunk.
        self.raw.write(struct.pack("<I", 0))
        self.raw.flush()
