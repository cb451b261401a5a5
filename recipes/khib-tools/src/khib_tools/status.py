"""The status page: one page of A's memory that B leaves its verdict in (khib-report).

A maps a page of a memory file (memfd, locked) outside B's window (the window's content
sits elsewhere while B runs), fills it with a magic and a nonce and looks up its physical address in
/proc/self/pagemap; B checks magic and nonce before it writes a message there, so a
verdict reaches A however B ends (a failed command, a deadline, the OOM killer), and a
resumed A finds the word the resume left there.

With ``khib hibernate --key`` the page also carries the key to B: A reads the key file
straight into the page (O_DIRECT: no page cache; a key on tmpfs is refused, its bytes
would be A's memory), and B takes it and zeroes it there before it saves A, so that no
copy of the key is in the image.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import re
import stat
import struct
from pathlib import Path

from khib_tools import format as fmt
from khib_tools.image import BLKFLSBUF

PAGE = fmt.PAGE
MAGIC = fmt.STATUS_MAGIC
MESSAGE_AT = fmt.STATUS_MESSAGE_AT  # after the magic and the 16-character nonce
IN_MEMORY = {"tmpfs", "ramfs", "rootfs"}  # a key file there is A's memory
KEY_SECTOR = 512  # a key on a block device (a partition of its own): its first 512 bytes
MAP_LOCKED = getattr(mmap, "MAP_LOCKED", 0x2000)  # never swapped out (x86's value)


CHUNK = 256  # pages mapped at a time while looking for one outside the window
LIMIT = 128 << 20  # how much memory the search may take (the window is smaller)


LOW_MEMORY = 1 << 20


class StatusPage:
    def __init__(self, avoid: tuple[int, int] = (0, 0)) -> None:
        """A page of this process's, at a physical address outside [start, end).

        The page allocator hands out pages from one free block after another, and the
        block it is at may lie in the window: chunks are mapped until one holds a page
        outside it; that chunk is kept, the others are freed."""
        self.nonce = os.urandom(fmt.STATUS_NONCE // 2).hex()
        rejected = []
        for attempt in range(LIMIT // (CHUNK * PAGE)):
            self.name = f"khib-status-{self.nonce}-{attempt}"
            chunk, addresses = mapped_pages(self.name)
            # Not in the window, nor in the first MiB, which B boots over (kernels from
            # 5.13 never give it out; B reads and writes the page through /dev/mem).
            outside = [i for i, a in enumerate(addresses)
                       if not avoid[0] <= a < avoid[1] and a >= LOW_MEMORY]
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

    def still_here(self) -> None:
        """The page has not moved (compaction may migrate even a locked page): B is
        told its address."""
        if physical_addresses(self.name, CHUNK)[self.at // PAGE] != self.address:
            raise OSError("A's status page moved since B was told where it is: try again")

    @property
    def handle(self) -> str:
        """What B is told: khib.status=ADDRESS:NONCE."""
        return f"{self.address:#x}:{self.nonce}"

    def message(self) -> str:
        """What B left here ("" if nothing)."""
        return self.text(MESSAGE_AT, fmt.STATUS_RETURN_AT)

    def returned(self) -> dict[str, str]:
        """How A finds B once B is back (khib-jump-back's NAME=VALUE words), or {}."""
        words = self.text(fmt.STATUS_RETURN_AT, fmt.STATUS_KEY_AT).split()
        return dict(word.split("=", 1) for word in words if "=" in word)

    def text(self, start: int, end: int) -> str:
        text = self.chunk[self.at + start:self.at + end].split(b"\0", 1)[0]
        return text.decode(errors="replace")

    def close(self) -> None:
        """No magic: a B that kept this page's address finds nothing to write to."""
        self.chunk[self.at:self.at + PAGE] = bytes(PAGE)

    def clear(self) -> None:
        """No message: what B leaves next is the verdict of the next jump."""
        self.chunk[self.at + MESSAGE_AT:self.at + fmt.STATUS_KEY_AT] = \
            bytes(fmt.STATUS_KEY_AT - MESSAGE_AT)

    def put_key(self, path: str) -> None:
        """The key file's bytes into the page, read past the page cache into a scratch
        page of this mapping and moved there, with no copy anywhere else in A."""
        scratch = self.at + PAGE if self.at + 2 * PAGE <= len(self.chunk) else self.at - PAGE
        where = filesystem_of(path)
        if where in IN_MEMORY or (where == "devtmpfs" and Path(path).is_file()):
            raise OSError(f"the key {path} is on {where}: its bytes are A's memory and would "
                          "be saved into the image; keep the key on a disk (a file on a "
                          "disk's filesystem, or a small partition of its own)")
        try:
            length = read_uncached(path, self.chunk, scratch)
            if Path(path).is_block_device():
                length = min(length, KEY_SECTOR)  # a key partition's first sector
            if not fmt.KEY_MIN <= length <= fmt.KEY_MAX:
                raise OSError(f"the key {path} holds {length} bytes: a hibernation key is "
                              f"{fmt.KEY_MIN} to {fmt.KEY_MAX} bytes")
            struct.pack_into("<I", self.chunk, self.at + fmt.STATUS_KEY_AT, length)
            self.chunk.move(self.at + fmt.STATUS_KEY_AT + 4, scratch, length)
        finally:
            self.chunk[scratch:scratch + PAGE] = bytes(PAGE)

    def clear_key(self) -> None:
        """Zeros where the key was (B takes it; should B never run, A does this)."""
        self.chunk[self.at + fmt.STATUS_KEY_AT:self.at + PAGE] = bytes(PAGE - fmt.STATUS_KEY_AT)


def uncache(fd: int) -> None:
    """Drop what the page cache holds of the file: O_DIRECT leaves pages cached earlier
    (udev's probe of a partition, say) where they are."""
    if stat.S_ISBLK(os.fstat(fd).st_mode):
        fcntl.ioctl(fd, BLKFLSBUF)
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:  # a kernel without ADVISE_SYSCALLS: every clean cached page goes
        Path("/proc/sys/vm/drop_caches").write_text("1")


def filesystem_of(path: str) -> str:
    """The type of the filesystem ``path`` is on (the longest mount point above it)."""
    real, best, kind = os.path.realpath(path), "", ""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, rest = line.partition(" - ")
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields.split()[4])
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, rest.split()[0]
    return kind


def read_uncached(path: str, into: mmap.mmap, at: int) -> int:
    """Up to a page of ``path`` into ``into[at:at + PAGE]``: with O_DIRECT where the
    filesystem allows it, else read and then dropped from the page cache."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        direct = True
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        fd, direct = os.open(path, os.O_RDONLY), False
    try:
        with memoryview(into)[at:at + PAGE] as page:
            try:
                length = os.preadv(fd, [page], 0)
            except OSError as exc:
                if not direct or exc.errno != errno.EINVAL:
                    raise
                os.close(fd)
                fd, direct = os.open(path, os.O_RDONLY), False
                length = os.preadv(fd, [page], 0)
        uncache(fd)
        return length
    finally:
        os.close(fd)


def mapped_pages(name: str) -> tuple[mmap.mmap, list[int]]:
    """A locked shared mapping of a new memory file (memfd: no filesystem writes it back)
    of CHUNK zeroed pages, and their physical addresses."""
    fd = os.memfd_create(name)
    try:
        os.ftruncate(fd, CHUNK * PAGE)
        chunk = mmap.mmap(fd, CHUNK * PAGE, flags=mmap.MAP_SHARED | MAP_LOCKED)
    finally:
        os.close(fd)
    for at in range(0, CHUNK * PAGE, PAGE):
        chunk[at] = 0  # fault each page in
    return chunk, physical_addresses(name, CHUNK)


def physical_addresses(name: str, pages: int) -> list[int]:
    """The physical addresses of this process's mapping of the memory file ``name``, page
    by page (root only: others read no page frames in /proc/self/pagemap)."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith(f"/memfd:{name} "):
            start = int(fields[0].split("-")[0], 16)
            break
    else:
        raise OSError(f"{name} is not mapped")
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
