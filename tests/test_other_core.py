"""khib-other on the host, with a file standing in for /dev/mem: A's own memory holding a
loaded kexec image of B (its control page, an indirection page, the pages that hold B's
window), as A's kernel leaves it after B jumped back."""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
from pathlib import Path

import pytest

from tests.helpers import PAGE, MiB

CONTROL, LIST, WINDOW, SOURCES = 0x100000, 0x101000, 0x200000, 0x300000
PAGES = 16  # the window's; the last one is its own source (kexec took a free window page)
BACKUP_LIST_AT = 2048 + 0x30  # x86_64, to 6.13: relocate_kernel's CP_PA_BACKUP_PAGES_MAP
IND_DESTINATION, IND_INDIRECTION, IND_DONE, IND_SOURCE = 0x1, 0x2, 0x4, 0x8


def source(index: int) -> int:
    return WINDOW + index * PAGE if index == PAGES - 1 else SOURCES + index * PAGE


@pytest.fixture
def mem(tmp_path: Path) -> Path:
    """4 MiB of A's memory, random, with B's image's list in it; and A's RAM beside it."""
    data = bytearray(os.urandom(4 * MiB))
    struct.pack_into("<Q", data, CONTROL + BACKUP_LIST_AT, LIST | IND_INDIRECTION)
    entries = [WINDOW | IND_DESTINATION, *(source(i) | IND_SOURCE for i in range(PAGES)), IND_DONE]
    struct.pack_into(f"<{len(entries)}Q", data, LIST, *entries)
    (tmp_path / "mem").write_bytes(data)
    (tmp_path / "iomem").write_text("00001000-003fffff : System RAM\n")
    return tmp_path / "mem"


def other(core: Path, mem: Path, *action: object, window: str = f"{WINDOW:#x}:{PAGES * PAGE:#x}",
          digest: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([core / "khib-other", "--mem", mem, "--ram", mem.with_name("iomem"),
                           "--control-page", hex(CONTROL), "--window", window,
                           *(["--digest", digest] if digest else []), *map(str, action)],
                          capture_output=True, text=True, check=False)


def b_memory(mem: bytes) -> bytes:
    """B's window as B had it: each page where kexec swapped it to."""
    return b"".join(mem[source(i):source(i) + PAGE] for i in range(PAGES))


def test_list_names_the_pages_and_their_digest(core: Path, mem: Path) -> None:
    result = other(core, mem, "list")
    assert result.returncode == 0, result.stderr
    pairs = b"".join(struct.pack("<QQ", WINDOW + i * PAGE, source(i)) for i in range(PAGES))
    assert result.stdout == f"pages={PAGES} digest={hashlib.sha256(pairs).hexdigest()}\n"
    # Another image than the one recorded: nothing read.
    refused = other(core, mem, "list", digest="0" * 64)
    assert refused.returncode == 1 and "is not the B that jumped back" in refused.stderr


def test_core_is_bs_window_at_its_physical_addresses(core: Path, mem: Path,
                                                     tmp_path: Path) -> None:
    result = other(core, mem, "core", tmp_path / "b.core")
    assert result.returncode == 0, result.stderr
    data = (tmp_path / "b.core").read_bytes()
    assert data[:4] == b"\x7fELF" and data[16] == 4  # ET_CORE
    phoff, = struct.unpack_from("<Q", data, 32)
    phnum, = struct.unpack_from("<H", data, 56)
    headers = [struct.unpack_from("<IIQQQQQQ", data, phoff + 56 * i) for i in range(phnum)]
    assert [h[0] for h in headers] == [4, 1]  # PT_NOTE (empty: no VMCOREINFO), one PT_LOAD
    _, _, offset, _, paddr, filesz, memsz, _ = headers[1]
    assert (paddr, filesz, memsz) == (WINDOW, PAGES * PAGE, PAGES * PAGE)
    assert data[offset:offset + filesz] == b_memory(mem.read_bytes())
    assert os.stat(tmp_path / "b.core").st_mode & 0o777 == 0o600


def test_poke_writes_where_b_has_its_pages_and_nowhere_else(core: Path, mem: Path,
                                                            tmp_path: Path) -> None:
    before = mem.read_bytes()
    at = WINDOW + PAGE - 8  # across two window pages
    (tmp_path / "bytes").write_bytes(b"new token bytes!")
    result = other(core, mem, "poke", hex(at), tmp_path / "bytes")
    assert result.returncode == 0, result.stderr
    after = mem.read_bytes()
    assert b_memory(after)[PAGE - 8:PAGE + 8] == b"new token bytes!"
    changed = [i for i in range(len(before)) if before[i] != after[i]]
    assert changed and all(source(0) + PAGE - 8 <= i < source(0) + PAGE or
                           source(1) <= i < source(1) + 8 for i in changed)


def test_poke_refuses_what_is_not_bs_or_not_what_was_expected(core: Path, mem: Path,
                                                              tmp_path: Path) -> None:
    before = mem.read_bytes()
    (tmp_path / "bytes").write_bytes(b"sixteen bytes...")
    outside = other(core, mem, "poke", hex(WINDOW + PAGES * PAGE - 8), tmp_path / "bytes")
    assert outside.returncode == 1 and "is not all in B's memory" in outside.stderr
    unexpected = other(core, mem, "poke", hex(WINDOW), tmp_path / "bytes", "--same", 4)
    assert unexpected.returncode == 1 and "not what was expected" in unexpected.stderr
    assert other(core, mem, "poke", "0x20000g", tmp_path / "bytes").returncode == 1
    assert mem.read_bytes() == before
    # A list that puts a page outside the window is not B's image: nothing read.
    elsewhere = other(core, mem, "list", window=f"{WINDOW + PAGE:#x}:{PAGES * PAGE:#x}")
    assert elsewhere.returncode == 1 and "no loaded image of B" in elsewhere.stderr
