"""The boot area at the end of a hibernation device: the kernel and initrd that saved A.

``khib hibernate`` writes them there before it jumps, with a footer in the device's last
page; a resume boot reads them back (checking their SHA-256) and runs them confined to
the same window as when they saved A. The memory image itself starts at the device's
first byte and may use everything below the boot area (the limit in the footer).

The footer is not sealed; B records its ``binding`` (the digests, the command line, the
window and the hibernation's nonce) in the image it seals, and a resume boot compares
the two before it runs anything from the boot area.

Footer: ``KHIBBOOT``, a little-endian 32-bit length, then that many bytes of JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from typing import NamedTuple

PAGE = 4096
MAGIC = b"KHIBBOOT"
ALIGN = 1 << 20
LARGEST = 256 << 20  # no kernel or initrd of B's is larger: a footer saying so is damaged


class NoBootArea(Exception):
    """The device holds no usable boot area: the message says why."""


class BootArea(NamedTuple):
    kernel: bytes
    initrd: bytes
    cmdline: str  # the confinement B ran with, without its console= arguments
    window: tuple[int, int]  # start, size
    limit: int  # the image may use the device's first ``limit`` bytes
    nonce: str  # this hibernation's: B finds it on its command line too
    digests: tuple[str, str]  # the kernel's and the initrd's SHA-256, hashed once

    def binding(self) -> dict[str, object]:
        """What the sealed image records of this boot area, to compare at resume."""
        return {"kernel": self.digests[0], "initrd": self.digests[1],
                "cmdline": self.cmdline, "window": list(self.window), "nonce": self.nonce}


def boot_area(kernel: bytes, initrd: bytes, cmdline: str, window: tuple[int, int],
              nonce: str) -> BootArea:
    """The boot area to write for B (its limit is the device's, found when written)."""
    return BootArea(kernel, initrd, cmdline, window, 0, nonce,
                    (hashlib.sha256(kernel).hexdigest(), hashlib.sha256(initrd).hexdigest()))


def device_size(fd: int) -> int:
    return os.lseek(fd, 0, os.SEEK_END)


def write(path: str, area: BootArea) -> int:
    """Write ``area`` at the end of the device; the limit left for the image."""
    fd = os.open(path, os.O_RDWR)
    try:
        size = device_size(fd)
        kernel_at = (size - PAGE - len(area.kernel) - len(area.initrd)) // ALIGN * ALIGN
        if kernel_at < ALIGN:
            raise OSError(f"{path} holds {size >> 20} MiB: too small for the boot area "
                          "and an image")
        initrd_at = kernel_at + len(area.kernel)
        footer = json.dumps({
            "kernel": [kernel_at, len(area.kernel), area.digests[0]],
            "initrd": [initrd_at, len(area.initrd), area.digests[1]],
            "cmdline": area.cmdline, "window": list(area.window), "limit": kernel_at,
            "nonce": area.nonce,
        }).encode()
        os.pwrite(fd, area.kernel, kernel_at)
        os.pwrite(fd, area.initrd, initrd_at)
        os.pwrite(fd, MAGIC + struct.pack("<I", len(footer)) + footer, size - PAGE)
        os.fsync(fd)
        return kernel_at
    finally:
        os.close(fd)


def read(path: str) -> BootArea:
    """The boot area of a device, its kernel and initrd checked against their digests."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = device_size(fd)
        tail = os.pread(fd, PAGE, size - PAGE) if size >= PAGE else b""
        if tail[:8] != MAGIC:
            raise NoBootArea(f"no hibernation image: {path} has no khib boot area")
        length, = struct.unpack_from("<I", tail, 8)
        try:
            footer = json.loads(tail[12:12 + length])
            parts = {}
            for name in ("kernel", "initrd"):
                at, length, digest = footer[name]
                if not (isinstance(at, int) and isinstance(length, int)
                        and 0 <= at <= size - PAGE and 0 <= length <= size - PAGE - at):
                    raise ValueError(f"the {name} lies outside the device")
                if length > LARGEST:
                    raise ValueError(f"the {name} is larger than any B's ({length} bytes)")
                data = os.pread(fd, length, at)
                found = hashlib.sha256(data).hexdigest()
                if found != digest:
                    raise NoBootArea(f"{path}: the saved {name} does not match its SHA-256")
                parts[name] = (data, found)
            start, window = footer["window"]
            area = BootArea(parts["kernel"][0], parts["initrd"][0], str(footer["cmdline"]),
                            (int(start), int(window)), int(footer["limit"]),
                            str(footer.get("nonce", "")),
                            (parts["kernel"][1], parts["initrd"][1]))
        except (ValueError, TypeError, KeyError) as exc:
            raise NoBootArea(f"{path}: the boot area's footer is damaged ({exc})") from exc
    finally:
        os.close(fd)
    return area
