"""The newc writer, byte by byte: headers, order, padding, trailer, limits."""

from __future__ import annotations

import io

import pytest

from khib_build.errors import PackError
from khib_build.image import newc
from khib_build.image.cpio import Entry, header, write_archive
from tests.helpers import fields, members


def test_header_layout() -> None:
    head = header(721, 0o100644, 0, 5, 1, 1234, 10, (0, 0), b"etc/x")
    assert head.startswith(b"070701000002D1000081A4000000000000000500000001000004D2")
    assert len(head) % 4 == 0 and head.endswith(b"etc/x\0" + b"\0" * (-(110 + 6) % 4))
    assert fields(head)[11] == 6  # the name size counts the NUL


def test_order_inodes_trailer_and_padding() -> None:
    out = io.BytesIO()
    entries = [Entry("a/c", "symlink", 0o777, target="../b"), Entry("a-b", "fifo", 0o644),
               Entry("a", "dir", 0o755), Entry("dev", "dir", 0o755),
               Entry("dev/console", "chr", 0o600, rdev=(5, 1))]
    total = write_archive(entries, out, epoch=0)
    data = out.getvalue()
    assert total == len(data) and len(data) % 512 == 0
    listed = members(data)
    assert [name for name, _ in listed] == ["a", "a-b", "a/c", "dev", "dev/console", "TRAILER!!!"]
    assert [values[0] for _, values in listed[:-1]] == [721, 722, 723, 724, 725]
    console = listed[4][1]
    assert (console[1], console[9], console[10]) == (0o020600, 5, 1)
    link = listed[2][1]
    assert link[6] == len("../b") and b"a/c\0\0\0../b" in data  # 110 + 4 bytes, padded to 116
    assert listed[0][1][4] == 2  # directories have nlink 2, as gen_init_cpio writes them
    assert listed[-1][1][4] == 1 and listed[-1][1][0] == 0


@pytest.mark.parametrize(("mtime", "epoch", "expected"), [(2000, 1000, 1000), (2000, 5000, 2000),
                                                          (-5, 100, 0)])
def test_mtime_is_clamped_to_the_epoch(mtime: int, epoch: int, expected: int) -> None:
    out = io.BytesIO()
    write_archive([Entry("f", "dir", 0o755, mtime=mtime)], out, epoch)
    assert members(out.getvalue())[0][1][5] == expected


@pytest.mark.parametrize("entry", [
    Entry("x" * 4096, "dir", 0o755),  # PATH_MAX with the NUL: the kernel skips it
    Entry("f", "dir", 0o755, uid=99999999999),  # 10 hex digits: a corrupt header
    Entry("f", "dir", 0o755, gid=0xFFFFFFFF),  # "unchanged" to the kernel
    Entry("f", "chr", 0o644, rdev=(4096, 0)),  # MKDEV overflows
    Entry("f", "blk", 0o644, rdev=(8, 1 << 20)),
], ids=["name", "uid", "gid", "major", "minor"])
def test_the_packer_refuses_a_header_the_kernel_would_misread(entry: Entry) -> None:
    out = io.BytesIO()
    with pytest.raises(PackError, match="internal error: the header of"):
        write_archive([entry], out, 0)
    write_archive([Entry("x" * 4095, "dir", 0o755, uid=0xFFFFFFFE)], io.BytesIO(), 0)


def test_the_newc_reader_takes_only_newc_headers() -> None:
    """One reader of newc headers (segments, size-report): 13 fields of exactly 8 hex
    digits after 070701 or 070702; a sign or a space (which int() would take, and a
    negative size would loop a reader) is refused, as is a short header."""
    good = newc.LAYOUT % (1, 0o100644, 0, 0, 1, 0, 5, 0, 0, 0, 0, 6, 0)
    assert newc.read_header(good) == newc.Header(0o100644, 5, 6)
    assert newc.read_header(b"070702" + good[6:]).filesize == 5
    for bad in (good[:109], b"070703" + good[6:], good.replace(b"00000005", b"-0000005"),
                good.replace(b"00000005", b" 0000005"), good.replace(b"00000005", b"+0000005")):
        with pytest.raises(newc.NewcError):
            newc.read_header(bad)
