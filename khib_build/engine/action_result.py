"""The ActionResult of Bazel's remote execution API (REAPI v2) in protobuf's wire format.

A Bazel HTTP cache keeps one under ``/ac/<key>``; bazel-remote refuses an upload there that
does not parse as one. Only what a shared cache entry needs is spelled out: its output
files, each a path and the digest of a CAS blob::

    ActionResult { repeated OutputFile output_files = 2; }
    OutputFile   { string path = 1; Digest digest = 2; }
    Digest       { string hash = 1; int64 size_bytes = 2; }

Decoding follows protobuf's rules: unknown fields (a server's execution metadata, say)
and known fields of another wire type are skipped, a scalar given twice keeps its last
value, a message given twice is merged.  Anything that is not a well-formed message is
refused with :class:`ProtobufError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

VARINT, I64, LEN, SGROUP, EGROUP, I32 = range(6)
MAX_FIELD = (1 << 29) - 1
MAX_DEPTH = 32  # groups nested deeper than this are refused (protobuf's own limit is 100)


class ProtobufError(ValueError):
    pass


@dataclass(frozen=True)
class Digest:
    hash: str
    size_bytes: int


@dataclass(frozen=True)
class OutputFile:
    path: str
    digest: Digest


def encode_action_result(files: list[OutputFile]) -> bytes:
    """The ActionResult listing ``files``, as protobuf encodes it (zero values left out)."""
    return b"".join(length_delimited(2, encode_output_file(f)) for f in files)


def decode_action_result(data: bytes) -> list[OutputFile]:
    """The output files of an encoded ActionResult."""
    return [decode_output_file(value) for number, kind, value in fields(data)
            if number == 2 and kind == LEN]


def encode_output_file(file: OutputFile) -> bytes:
    return string_field(1, file.path) + length_delimited(2, encode_digest(file.digest))


def decode_output_file(data: bytes) -> OutputFile:
    path = ""
    digest = b""
    for number, kind, value in fields(data):
        if number == 1 and kind == LEN:
            path = text(value)
        elif number == 2 and kind == LEN:
            digest += value  # two copies of a message field merge like their concatenation
    return OutputFile(path, decode_digest(digest))


def encode_digest(digest: Digest) -> bytes:
    size = b"" if digest.size_bytes == 0 else \
        varint(2 << 3 | VARINT) + varint(digest.size_bytes & (1 << 64) - 1)
    return string_field(1, digest.hash) + size


def decode_digest(data: bytes) -> Digest:
    hash_, size = "", 0
    for number, kind, value in fields(data):
        if number == 1 and kind == LEN:
            hash_ = text(value)
        elif number == 2 and kind == VARINT:
            size = value - (1 << 64) if value >= 1 << 63 else value  # int64: two's complement
    return Digest(hash_, size)


def string_field(number: int, value: str) -> bytes:
    return length_delimited(number, value.encode()) if value else b""


def length_delimited(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | LEN) + varint(len(payload)) + payload


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def text(value: bytes) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise ProtobufError("a string field is not UTF-8") from None


def fields(data: bytes) -> Iterator[tuple[int, int, bytes | int]]:
    """Each field of a message as (number, wire type, value): an int for a varint, the
    payload of a length-delimited field, the raw bytes of the others."""
    reader = Reader(data)
    while not reader.done():
        number, kind = reader.tag()
        if kind == EGROUP:
            raise ProtobufError(f"field {number} ends a group that was not started")
        yield number, kind, reader.value(number, kind, 0)


class Reader:
    """Reads the wire format of one message, refusing anything cut short or malformed."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.at = 0

    def done(self) -> bool:
        return self.at == len(self.data)

    def varint(self) -> int:
        value = 0
        for shift in range(0, 70, 7):
            if self.at == len(self.data):
                raise ProtobufError("the message ends inside a varint")
            byte = self.data[self.at]
            self.at += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value & (1 << 64) - 1  # (a tenth byte's bits past 64 drop out)
        raise ProtobufError("a varint is longer than 10 bytes")

    def tag(self) -> tuple[int, int]:
        tag = self.varint()
        number, kind = tag >> 3, tag & 7
        if not 1 <= number <= MAX_FIELD:
            raise ProtobufError(f"field number {number} is out of range")
        if kind > I32:
            raise ProtobufError(f"field {number} has the unknown wire type {kind}")
        return number, kind

    def take(self, size: int) -> bytes:
        if size > len(self.data) - self.at:
            raise ProtobufError("the message ends inside a field")
        self.at += size
        return bytes(self.data[self.at - size:self.at])

    def value(self, number: int, kind: int, depth: int) -> bytes | int:
        if kind == VARINT:
            return self.varint()
        if kind == LEN:
            return self.take(self.varint())
        if kind == SGROUP:
            self.skip_group(number, depth + 1)
            return b""
        return self.take(8 if kind == I64 else 4)

    def skip_group(self, number: int, depth: int) -> None:
        """Pass over a group's fields up to its end tag."""
        if depth > MAX_DEPTH:
            raise ProtobufError("groups are nested too deep")
        while not self.done():
            inner, kind = self.tag()
            if kind == EGROUP:
                if inner != number:
                    raise ProtobufError(f"group {number} ends with the tag of {inner}")
                return
            self.value(inner, kind, depth)
        raise ProtobufError(f"group {number} has no end")
