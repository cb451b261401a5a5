"""The cpio ``newc`` format as the kernel reads it: its constants, the header layout
the packer writes, and the one reader of a header."""

from __future__ import annotations

import re
from dataclasses import dataclass

from khib_build.errors import KhibError

MAGIC = b"070701"  # 070702 (with a checksum) is read too
HEADER_SIZE = 110  # the magic and 13 fields of 8 hex digits
LAYOUT = MAGIC + b"%08X" * 13  # ino mode uid gid nlink mtime filesize major minor
#                                rmajor rminor namesize check
TRAILER = b"TRAILER!!!"
WELL_FORMED = re.compile(rb"07070[12][0-9A-Fa-f]{104}")


class NewcError(KhibError):
    """A header that is not newc, or is cut short."""


@dataclass(frozen=True)
class Header:
    """What a reader needs of one header: the sizes that place the next one."""

    mode: int
    filesize: int
    namesize: int  # with the name's NUL

    @property
    def name_span(self) -> int:
        """Bytes of the name and its padding after the header (to a 4-byte boundary)."""
        return self.namesize + (-(HEADER_SIZE + self.namesize) % 4)

    @property
    def data_span(self) -> int:
        """Bytes of the data and its padding."""
        return self.filesize + (-self.filesize % 4)


def read_header(raw: bytes) -> Header:
    """The header in the first :data:`HEADER_SIZE` bytes of ``raw``: the magic, then 13
    fields of exactly 8 hex digits each (no sign, no space)."""
    if len(raw) < HEADER_SIZE:
        raise NewcError("truncated cpio header")
    if not WELL_FORMED.match(raw):
        raise NewcError("corrupt cpio header (not newc: a magic of 070701 or 070702 and "
                        "13 fields of 8 hex digits)")
    return Header(int(raw[14:22], 16), int(raw[54:62], 16), int(raw[94:102], 16))


def is_trailer(header: Header, name_and_padding: bytes) -> bool:
    return name_and_padding[:header.namesize - 1] == TRAILER
