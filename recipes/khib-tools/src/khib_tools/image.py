"""A khib image's headers as the disk has them (khib-core's khib-format.h), for `khib info`
and for what a resume boot reads before the C core has checked anything; and its first
page, which says what the image is and which no seal covers.

Nothing here is trusted for a resume: what a resume acts on comes from the C core's
check (``khib-restore --check --meta-out``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import struct
from typing import NamedTuple

from khib_tools.format import (
    ASIDE_MAGIC,
    ATTEMPTS_AT,
    ELF_MAGIC,
    KINDS,
    NOTE_LAYOUT,
    NOTE_META,
    NOTE_SEAL,
    NOTE_SEGMENTS,
    PT_MEMORY,
    USED_MAGIC,
    WHY_AT,
    WHY_MAX,
)

BLKFLSBUF = 0x1261  # drop a block device's cached blocks: another kernel wrote the disk


class NoImage(Exception):
    """There is no complete, unused image: the message says which."""


class Segment(NamedTuple):
    paddr: int
    memsz: int
    kind: str  # data (stored), zero or free (recorded)
    crc32: int
    filesz: int  # the bytes a data run takes in the image


class Layout(NamedTuple):
    """What khib-save found of the old kernel: its free pages, counted two ways."""
    free_recorded: int = 0
    free_counted: int = 0
    kernel_count: int = 0


class Image(NamedTuple):
    segments: list[Segment]
    meta: dict[str, object]
    size: int = 0  # bytes on the disk, from the seal
    keyed: bool = False
    layout: Layout = Layout()
    vmcoreinfo: bool = False


def read_at(fd: int, size: int, offset: int) -> bytes:
    data = os.pread(fd, size, offset)
    if len(data) != size:
        raise NoImage("no complete image (too short to hold one)")
    return data


def state(first: bytes) -> str:
    """What the first four bytes say: complete, used, set aside, incomplete or foreign."""
    if first == ELF_MAGIC:
        return "complete"
    if first == USED_MAGIC:
        return "used"
    if first == ASIDE_MAGIC:
        return "aside"
    return "incomplete" if first == bytes(4) else "foreign"


def opened(path: str, flags: int = os.O_RDONLY) -> int:
    """The image's file; a block device's cached blocks dropped (another kernel wrote it)."""
    fd = os.open(path, flags)
    if stat.S_ISBLK(os.fstat(fd).st_mode):
        fcntl.ioctl(fd, BLKFLSBUF)
    return fd


def first_page(fd: int) -> bytes:
    """The ELF header of a complete image; NoImage says what else the first page holds."""
    header = read_at(fd, 64, 0)
    found = state(header[:4])
    if found == "used":
        raise NoImage("no hibernation image: the one here was used (the system resumed "
                      "from it)")
    if found == "aside":
        why = read_at(fd, WHY_MAX, WHY_AT).split(b"\0", 1)[0].decode("ascii", "replace")
        why = "".join(c if " " <= c <= "~" else "?" for c in why)  # the disk's words: text
        raise NoImage("no hibernation image: the one here was set aside by a resume boot "
                      f"({why or 'no reason recorded'})")
    if found == "incomplete":
        raise NoImage("no complete image (a save did not finish, or none was made)")
    if found == "foreign" or header[4] != 2:
        raise NoImage("not a khib image (an ELF64 core)")
    return header


def complete(path: str) -> None:
    """Return if ``path`` starts with a complete image; NoImage says why not."""
    fd = opened(path)
    try:
        first_page(fd)
    finally:
        os.close(fd)


def note_table(fd: int, header: bytes) -> tuple[list[tuple[int, ...]], dict[int | str,
                                                                             tuple[int, int]]]:
    """The program headers, and where each note's descriptor is: (offset, size)."""
    phoff, = struct.unpack_from("<Q", header, 32)
    phnum, = struct.unpack_from("<H", header, 56)
    table = read_at(fd, 56 * phnum, phoff)
    phdrs = [struct.unpack_from("<IIQQQQQQ", table, 56 * i) for i in range(phnum)]
    places: dict[int | str, tuple[int, int]] = {}
    for kind, _, offset, _, _, filesz, _, _ in phdrs:
        if kind == 4:
            places.update((key, (offset + at, size)) for key, (at, size)
                          in note_places(read_at(fd, filesz, offset)).items())
    return phdrs, places


def read_image(path: str) -> Image:
    """The image at the start of ``path`` (a file or a disk), as the disk has it (nothing
    checked: for `khib info`); NoImage says why there is none."""
    fd = opened(path)
    try:
        phdrs, places = note_table(fd, first_page(fd))
        notes = {key: read_at(fd, size, at) for key, (at, size) in places.items()}
    finally:
        os.close(fd)
    records = notes.get(NOTE_SEGMENTS, b"")
    loads = [p for p in phdrs if p[0] == PT_MEMORY]
    if len(records) != 24 * len(loads) or NOTE_SEAL not in notes:
        raise NoImage("not a khib image: its notes do not match its segments")
    segments = []
    for index, (_, _, _, _, paddr, filesz, memsz, _) in enumerate(loads):
        _, _, crc, kind = struct.unpack_from("<QQII", records, 24 * index)
        segments.append(Segment(paddr, memsz, KINDS[min(kind, 2)], crc, filesz))
    meta = json.loads(notes[NOTE_META]) if notes.get(NOTE_META) else {}
    size, keyed = struct.unpack_from("<QQ", notes[NOTE_SEAL])
    layout = notes.get(NOTE_LAYOUT, bytes(40))
    return Image(segments, meta, size, bool(keyed),
                 Layout(*struct.unpack_from("<8x3Q", layout)), "VMCOREINFO" in notes)


def note_places(data: bytes) -> dict[int | str, tuple[int, int]]:
    """The notes in one PT_NOTE segment: KHIB's by type, and "VMCOREINFO", as (offset of
    the descriptor in ``data``, its size)."""
    found: dict[int | str, tuple[int, int]] = {}
    at = 0
    while at + 12 <= len(data):
        namesz, descsz, kind = struct.unpack_from("<III", data, at)
        name = data[at + 12:at + 12 + namesz].rstrip(b"\0")
        desc = at + 12 + (namesz + 3) // 4 * 4
        if name not in (b"KHIB", b"VMCOREINFO") or desc + descsz > len(data):
            break
        found[kind if name == b"KHIB" else "VMCOREINFO"] = (desc, descsz)
        at = desc + (descsz + 3) // 4 * 4
    return found


def mark(path: str, magic: bytes) -> None:
    """Write an image's first four bytes (USED_MAGIC after a resume, zeros when A carries
    on), durably."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, magic, 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def set_aside(path: str, why: str) -> None:
    """A resume boot will not use this image: it is never resumed, and says why."""
    fd = os.open(path, os.O_WRONLY)
    try:
        reason = why.encode()[:WHY_MAX - 1]
        os.pwrite(fd, reason + bytes(WHY_MAX - len(reason)), WHY_AT)
        os.pwrite(fd, ASIDE_MAGIC, 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def attempts(path: str, at: int = ATTEMPTS_AT) -> int:
    """How many resume boots handed this image over to a restore (at WRITES_AT: how many
    restores began to write it back, as khib-restore counts)."""
    fd = opened(path)
    try:
        return int.from_bytes(read_at(fd, 4, at), "little")
    finally:
        os.close(fd)


def count_attempt(path: str) -> None:
    """One more resume boot that hands the image over, on the disk before it does."""
    fd = os.open(path, os.O_RDWR)
    try:
        count = int.from_bytes(read_at(fd, 4, ATTEMPTS_AT), "little")
        os.pwrite(fd, min(count + 1, 0xFFFFFFFF).to_bytes(4, "little"), ATTEMPTS_AT)
        os.fsync(fd)
    finally:
        os.close(fd)


def retire(path: str) -> None:
    """After a resume: the image's seal is gone too, so that flipping its first bytes back
    cannot make a resume boot take the old A for a new one."""
    fd = opened(path, os.O_RDWR)
    try:
        header = read_at(fd, 64, 0)
        if state(header[:4]) in ("used", "complete"):
            os.pwrite(fd, USED_MAGIC, 0)
            with contextlib.suppress(NoImage, struct.error):
                _, places = note_table(fd, ELF_MAGIC + header[4:])
                if NOTE_SEAL in places:
                    at, size = places[NOTE_SEAL]
                    os.pwrite(fd, bytes(size), at)
            os.pwrite(fd, bytes(60), 4)
            os.fsync(fd)
    finally:
        os.close(fd)
