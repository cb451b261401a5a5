"""What the kernel's initramfs unpacker (init/initramfs.c) accepts, which is tighter than
the newc format, GNU cpio or bsdtar: every value is checked against these where it is
read, and the packer refuses a header it cannot encode."""

from __future__ import annotations

FIELD_MAX = 0xFFFFFFFF  # a newc header field: 8 hex digits
ID_MAX = 0xFFFFFFFE  # uid/gid 0xFFFFFFFF means "unchanged" (-1) to the kernel
MAJOR_MAX = 4095  # MKDEV(major, minor) keeps 12 bits of major
MINOR_MAX = 0xFFFFF  # ... and 20 bits of minor: larger values overflow silently
NAME_MAX = 4096  # PATH_MAX with the terminating NUL: longer names are skipped
SIZE_LIMIT = 1 << 32  # files below 4 GiB
MODE_BITS = 0o7777  # permission bits; the type bits come from the entry's kind
TABLE_LINE_ENTRIES = 10_000  # the most one device-table line may make
IMAGE_ENTRIES = 1_000_000  # the most one image may hold


def id_problem(what: str, value: int) -> str | None:
    """Why a uid or gid cannot be used, or None."""
    if value == FIELD_MAX:
        return f"{what} {value} means 'unchanged' to the kernel; give at most {ID_MAX}"
    if value > ID_MAX:
        return f"{what} {value} does not fit the 32-bit field; give at most {ID_MAX}"
    return None


def device_problem(major: int, minor: int) -> str | None:
    """Why a device number cannot be used, or None."""
    if major > MAJOR_MAX:
        return f"major {major} is above {MAJOR_MAX}, the largest the kernel takes"
    if minor > MINOR_MAX:
        return f"minor {minor} is above {MINOR_MAX}, the largest the kernel takes"
    return None


def size_problem(size: int) -> str | None:
    """Why a file of ``size`` bytes cannot be in the image, or None."""
    if size >= SIZE_LIMIT:
        return f"{size} bytes; cpio newc holds files below 4 GiB"
    return None


def name_problem(path: str) -> str | None:
    """Why a path cannot be an entry's name, or None."""
    size = len(path.encode("utf-8", "surrogateescape"))
    if size + 1 > NAME_MAX:
        return (f"name of {size} bytes; the kernel takes names below {NAME_MAX} bytes")
    return None
