"""For one file list, khib-build and the kernel's gen_init_cpio write the same entries.

Intended differences in header fields, not compared here: gen_init_cpio stamps each
member with device 3:1 (khib-build: 0:0), includes the NUL in a symlink's size, gives
fifos and sockets a link count of 2 (khib-build: 1, as GNU cpio does), takes
regular files' mtimes from the files (khib-build clamps every mtime to
SOURCE_DATE_EPOCH), and gives a hard-link group one inode number where khib-build
numbers members in archive order and lets the group share the first one's.  Order:
gen_init_cpio writes the names of a hard-link group together, as its file line lists
them; khib-build keeps byte order of names throughout (the data still travels with the
group's last member in either).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import KERNEL_TARBALL, assert_ok, kernel_usr_tools, khib, members

pytestmark = pytest.mark.skipif(not KERNEL_TARBALL.is_file(), reason="needs linux-source-6.1")


def file_list(folder: Path) -> str:
    (folder / "content").mkdir()
    lines = ["dir /bin 755 0 0", "dir /dev 755 0 0", "nod /dev/console 600 0 0 c 5 1",
             "nod /dev/sda 660 0 6 b 8 0", "slink /bin/sh busybox 777 0 0",
             "pipe /run-fifo 644 0 0", "sock /run-sock 755 0 0", "dir /etc 750 0 0"]
    modes = ("644", "600", "755", "4755", "2711", "1777", "400")
    for i, (size, mode) in enumerate(zip((0, 1, 3, 4, 5, 4096, 70_001), modes, strict=True)):
        (folder / "content" / f"f{i}").write_bytes(os.urandom(size))
        lines.append(f"file /etc/f{i} {folder / 'content' / f'f{i}'} {mode} {i} {i * 2}")
    (folder / "content" / "busybox").write_bytes(b"\x7fELF" + os.urandom(1000))
    lines.append(f"file /bin/busybox {folder / 'content' / 'busybox'} 755 0 0 /bin/ls /bin/zz")
    return "\n".join(sorted(lines, key=lambda line: line.split()[1].encode())) + "\n"


def comparable(archive: bytes) -> list[tuple]:
    """Each member's name, mode, owner, links, device, and data, in archive order."""
    found, offset = [], 0
    for name, values in members(archive):
        start = archive.index(name.encode() + b"\0", offset) + len(name) + 1
        start += -start % 4
        data = archive[start:start + values[6]]
        if (values[1] & 0o170000) == 0o120000:
            data = data.rstrip(b"\0")
        kind = values[1] & 0o170000
        nlink = values[4] if kind in (0o100000, 0o040000) else None  # fifo, sock: see above
        found.append((name, values[1], values[2], values[3], nlink, values[9], values[10], data))
        offset = start + values[6]
    return found


def test_same_entries_and_contents_as_gen_init_cpio(tmp_path: Path) -> None:
    listing = tmp_path / "list"
    listing.write_text(file_list(tmp_path))
    tools = kernel_usr_tools()
    reference = subprocess.run([str(tools / "usr" / "gen_init_cpio"), "-t", "0", str(listing)],
                               capture_output=True, check=True).stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    ours = tmp_path / "ours.cpio"
    assert_ok(khib("pack", empty, "-o", ours, "--compress", "none", "--file-list", listing))
    assert sorted(comparable(ours.read_bytes())) == sorted(comparable(reference))
    assert len(ours.read_bytes()) % 512 == len(reference) % 512 == 0
