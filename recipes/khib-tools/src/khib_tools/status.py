"""The status page: one page of A's memory that B leaves its verdict in (khib-report).

A maps a page of a tmpfs file, fills it with a magic and a nonce and looks up its
physical address in /proc/self/pagemap; B checks magic and nonce before it writes a
message there, so a verdict reaches A however B ends (a failed command, a deadline, the
OOM killer), and a hibernated A finds, once resumed, what B wrote before saving it.
"""

from __future__ import annotations

import mmap
import os
import secrets
from pathlib import Path

PAGE = 4096
MAGIC = b"KHIBSTAT"
MESSAGE_AT = len(MAGIC) + 16  # after the magic and the 16-character nonce


class StatusPage:
    def __init__(self, folder: Path = Path("/tmp")) -> None:
        self.nonce = secrets.token_hex(8)
        path = folder / f"khib-status-{self.nonce}"
        with path.open("w+b") as backing:
            backing.truncate(PAGE)
            self.page = mmap.mmap(backing.fileno(), PAGE)
        self.page[:MESSAGE_AT] = MAGIC + self.nonce.encode()
        try:
            self.address = physical_address(path)
        finally:
            path.unlink()  # the mapping keeps the page

    @property
    def handle(self) -> str:
        """What B is told: khib.status=ADDRESS:NONCE."""
        return f"{self.address:#x}:{self.nonce}"

    def message(self) -> str:
        """What B left here ("" if nothing)."""
        return self.page[MESSAGE_AT:].split(b"\0", 1)[0].decode(errors="replace")


def physical_address(path: Path) -> int:
    """The physical address of this process's mapping of ``path`` (root only)."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == str(path):
            start = int(fields[0].split("-")[0], 16)
            break
    else:
        raise OSError(f"{path} is not mapped")
    fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    try:
        entry = int.from_bytes(os.pread(fd, 8, start // PAGE * 8), "little")
    finally:
        os.close(fd)
    frame = entry & ((1 << 55) - 1)
    if not entry >> 63 or not frame:
        raise OSError("/proc/self/pagemap shows no page frame (not root?)")
    return frame * PAGE
