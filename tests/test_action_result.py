"""The ActionResult codec against protobuf's own runtime, given REAPI v2's field numbers."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from khib_build.engine.action_result import (
    Digest,
    OutputFile,
    ProtobufError,
    decode_action_result,
    encode_action_result,
)

Field = descriptor_pb2.FieldDescriptorProto
# The messages as remote_execution.proto declares them, with a few of the fields khib-build
# leaves alone (a server adds execution_metadata; Bazel fills exit_code and stdout_raw).
MESSAGES = {
    "Digest": [("hash", 1, Field.TYPE_STRING, None, False),
               ("size_bytes", 2, Field.TYPE_INT64, None, False)],
    "OutputFile": [("path", 1, Field.TYPE_STRING, None, False),
                   ("digest", 2, Field.TYPE_MESSAGE, "Digest", False),
                   ("is_executable", 4, Field.TYPE_BOOL, None, False),
                   ("contents", 5, Field.TYPE_BYTES, None, False)],
    "ExecutedActionMetadata": [("worker", 1, Field.TYPE_STRING, None, False)],
    "ActionResult": [("output_files", 2, Field.TYPE_MESSAGE, "OutputFile", True),
                     ("exit_code", 4, Field.TYPE_INT32, None, False),
                     ("stdout_raw", 5, Field.TYPE_BYTES, None, False),
                     ("execution_metadata", 9, Field.TYPE_MESSAGE, "ExecutedActionMetadata",
                      False)],
}
PACKAGE = "build.bazel.remote.execution.v2"


def reference() -> dict[str, Any]:
    """Message classes built by protobuf from the descriptors above."""
    file = descriptor_pb2.FileDescriptorProto(name="khib_reapi_test.proto", package=PACKAGE,
                                              syntax="proto3")
    for name, fields in MESSAGES.items():
        message = file.message_type.add(name=name)
        for field, number, kind, type_name, repeated in fields:
            message.field.add(name=field, number=number, type=kind,
                              type_name=f".{PACKAGE}.{type_name}" if type_name else None,
                              label=Field.LABEL_REPEATED if repeated else Field.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))
            for name in MESSAGES}


REF = reference()
digests = st.builds(Digest, st.text(max_size=70), st.integers(-(1 << 63), (1 << 63) - 1))
files = st.lists(st.builds(OutputFile, st.text(max_size=20), digests), max_size=4)


def as_reference(found: list[OutputFile], worker: str = "") -> Any:
    result = REF["ActionResult"]()
    for file in found:
        result.output_files.add(path=file.path, digest=REF["Digest"](
            hash=file.digest.hash, size_bytes=file.digest.size_bytes))
    if worker:
        result.execution_metadata.worker = worker
    return result


def from_reference(result: Any) -> list[OutputFile]:
    return [OutputFile(f.path, Digest(f.digest.hash, f.digest.size_bytes))
            for f in result.output_files]


@given(files)
def test_the_encoding_is_protobufs_own(found: list[OutputFile]) -> None:
    encoded = encode_action_result(found)
    assert encoded == as_reference(found).SerializeToString(deterministic=True)
    assert decode_action_result(encoded) == found


@given(files, st.text(min_size=1, max_size=20), st.integers(-(1 << 31), (1 << 31) - 1),
       st.binary(max_size=20))
def test_fields_khib_does_not_know_are_skipped(found: list[OutputFile], worker: str,
                                               exit_code: int, stdout: bytes) -> None:
    result = as_reference(found, worker)
    result.exit_code = exit_code
    result.stdout_raw = stdout
    for file in result.output_files:
        file.is_executable = True
    assert decode_action_result(result.SerializeToString()) == found


def test_repeated_fields_keep_the_last_scalar_and_merge_messages() -> None:
    # One OutputFile holding path "a", digest {hash "h1"}, path "b", digest {size 7}.
    output_file = b"\x0a\x01a\x12\x04\x0a\x02h1\x0a\x01b\x12\x02\x10\x07"
    data = b"\x12" + bytes([len(output_file)]) + output_file
    want = REF["ActionResult"]()
    want.ParseFromString(data)
    assert decode_action_result(data) == from_reference(want) == [
        OutputFile("b", Digest("h1", 7))]


@pytest.mark.parametrize("data, why", [
    (b"\x12", "ends inside a varint"),
    (b"\x12\x05ab", "ends inside a field"),
    (b"\x12\x03\x0a\x05a", "ends inside a field"),
    (b"\x12\x02\x0a\x01\xff", "ends inside a field"),
    (b"\x12\x03\x0a\x01\xff", "not UTF-8"),
    (b"\x0f", "unknown wire type 7"),
    (b"\x00\x00", "field number 0"),
    (b"\x08" + b"\xff" * 10 + b"\x01", "longer than 10 bytes"),
    (b"\x1b\x08\x01", "group 3 has no end"),
    (b"\x1b\x24", "group 3 ends with the tag of 4"),
    (b"\x1c", "not started"),
    (b"\x1b" * 40, "nested too deep"),
])
def test_malformed_input_is_refused_in_words(data: bytes, why: str) -> None:
    with pytest.raises(ProtobufError, match=why):
        decode_action_result(data)
    with pytest.raises(DecodeError):
        REF["ActionResult"]().ParseFromString(data)


@settings(max_examples=400)
@given(st.one_of(st.binary(max_size=40),
                 files.map(encode_action_result).flatmap(
                     lambda data: st.tuples(st.just(data), st.integers(0, 80),
                                            st.integers(0, 255)).map(flip))))
def test_any_bytes_parse_as_protobuf_parses_them(data: bytes) -> None:
    """Random bytes, and valid messages with one byte changed: refused when the protobuf
    runtime refuses them, the same output files when both accept them."""
    want = REF["ActionResult"]()
    try:
        want.ParseFromString(data)
    except DecodeError:
        with pytest.raises(ProtobufError):
            decode_action_result(data)
        return
    try:
        assert decode_action_result(data) == from_reference(want)
    except ProtobufError as exc:
        # Python's runtime (upb) lets a zero tag pass inside a skipped group; Go's
        # (bazel-remote's) refuses it, and so does khib-build.
        assert str(exc) == "field number 0 is out of range"


def flip(case: tuple[bytes, int, int]) -> bytes:
    data, where, byte = case
    if not data:
        return data
    changed = bytearray(data)
    changed[where % len(data)] = byte
    return bytes(changed)
