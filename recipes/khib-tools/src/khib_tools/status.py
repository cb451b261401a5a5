"""The status page: one page of A's memory that B leaves its verdict in (khib-report).

A maps a page of a tmpfs file outside B's window (the window's content sits elsewhere
while B runs), fills it with a magic and a nonce and looks up its physical address in
/proc/self/pagemap; B checks magic and nonce before it writes a message there, so a
verdict reaches A however B ends (a failed command, a deadline, the OOM killer), and a
hibernated A finds, once resumed, what B wrote before saving it.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

PAGE = 4096
MAGIC = b"KHIBSTAT"
MESSAGE_AT = len(MAGIC) + 16  # after the magic and the 16-character nonce


CHUNK = 256  # pages mapped at a time while looking for one outside the window
LIMIT = 128 << 20  # how much memory the search may take (the window is smaller)


class StatusPage:
    def __init__(self, avoid: tuple[int, int] = (0, 0), folder: Path = Path("/tmp")) -> None:
        """A page of this process's, at a physical address outside [start, end).

        The page allocator hands out pages from one free block after another, and the
        block it is at may lie in the window: chunks are mapped until one holds a page
        outside it; that chunk is kept, the others are freed."""
        self.nonce = os.urandom(8).hex()
        rejected = []
        for attempt in range(LIMIT // (CHUNK * PAGE)):
            chunk, addresses = mapped_pages(folder / f"khib-status-{self.nonce}-{attempt}")
            outside = [i for i, a in enumerate(addresses) if not avoid[0] <= a < avoid[1]]
            if outside:
                break
            rejected.append(chunk)
        else:
            raise OSError(f"no page outside {avoid[0]:#x}-{avoid[1]:#x} in the first "
                          f"{LIMIT >> 20} MiB allocated")
        for other in rejected:
            other.close()
        self.chunk, self.at = chunk, outside[0] * PAGE
        self.address = addresses[outside[0]]
        self.chunk[self.at:self.at + MESSAGE_AT] = MAGIC + self.nonce.encode()

    @property
    def handle(self) -> str:
        """What B is told: khib.status=ADDRESS:NONCE."""
        return f"{self.address:#x}:{self.nonce}"

    def message(self) -> str:
        """What B left here ("" if nothing)."""
        text = self.chunk[self.at + MESSAGE_AT:self.at + PAGE].split(b"\0", 1)[0]
        return text.decode(errors="replace")


def mapped_pages(path: Path) -> tuple[mmap.mmap, list[int]]:
    """A shared mapping of a new tmpfs file of CHUNK zeroed pages, and their physical
    addresses (the file itself is gone; the mapping keeps the pages)."""
    with path.open("w+b") as backing:
        backing.truncate(CHUNK * PAGE)
        chunk = mmap.mmap(backing.fileno(), CHUNK * PAGE)
    try:
        for at in range(0, CHUNK * PAGE, PAGE):
            chunk[at] = 0  # fault each page in
        return chunk, physical_addresses(path, CHUNK)
    finally:
        path.unlink()


def physical_addresses(path: Path, pages: int) -> list[int]:
    """The physical addresses of this process's mapping of ``path``, page by page (root
    only: others read no page frames in /proc/self/pagemap)."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == str(path):
            start = int(fields[0].split("-")[0], 16)
            break
    else:
        raise OSError(f"{path} is not mapped")
    fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    try:
        table = os.pread(fd, 8 * pages, start // PAGE * 8)
    finally:
        os.close(fd)
    addresses = []
    for index in range(pages):
        entry = int.from_bytes(table[8 * index:8 * index + 8], "little")
        frame = entry & ((1 << 55) - 1)
        if not entry >> 63 or not frame:
            raise OSError("/proc/self/pagemap shows no page frame (not root?)")
        addresses.append(frame * PAGE)
    return addresses
