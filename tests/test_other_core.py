"""khib-other on the host, with files standing in for /dev/mem and /proc/kpageflags: A's
own memory holding a loaded kexec image of B (its control page, an indirection page, the
pages that hold B's window), as A's kernel leaves it after B jumped back, and the page
flags that say which pages the image holds. Lists the kernel never makes, and an image
unloaded since, are refused before anything is written."""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import PAGE, MiB, assert_ok, khib

CONTROL, LIST, WINDOW, SOURCES, ELSEWHERE = 0x100000, 0x101000, 0x200000, 0x300000, 0x380000
PAGES = 16  # the window's; the last one is its own source (kexec took a free window page)
# relocate_kernel's CP_PA_BACKUP_PAGES_MAP, after the control code: x86_64 to 6.13, i386
BACKUP_LIST_AT = {8: 2048 + 0x30, 4: 2048 + 0x1C}
IND_DESTINATION, IND_INDIRECTION, IND_DONE, IND_SOURCE = 0x1, 0x2, 0x4, 0x8
KPF_RESERVED = 1 << 32
NOTE_TEXT = b"OSRELEASE=6.1.0\nPAGESIZE=4096\n"  # B's
A_NOTE_TEXT = b"OSRELEASE=6.1.0-a\nPAGESIZE=4096\n"  # A's


def source(index: int) -> int:
    return WINDOW + index * PAGE if index == PAGES - 1 else SOURCES + index * PAGE


def entries(sources: list[int] | None = None) -> list[int]:
    """The indirection page's entries: B's window from WINDOW on, one source a page."""
    sources = [source(i) for i in range(PAGES)] if sources is None else sources
    return [WINDOW | IND_DESTINATION, *(s | IND_SOURCE for s in sources), IND_DONE]


def lay_out(folder: Path, listed: list[int], word: int = 8,
            reserved: set[int] | None = None) -> Path:
    """4 MiB of A's memory, random, with the list in it; A's RAM and its pages' flags
    (reserved: the control page, the indirection page and the sources, unless given)."""
    data = bytearray(os.urandom(4 * MiB))
    kind = "Q" if word == 8 else "I"
    struct.pack_into(f"<{kind}", data, CONTROL + BACKUP_LIST_AT[word], LIST | IND_INDIRECTION)
    struct.pack_into(f"<{len(listed)}{kind}", data, LIST, *listed)
    if reserved is None:
        reserved = {CONTROL, LIST, *(e & -PAGE for e in listed if e & 0xF == IND_SOURCE)}
    flags = bytearray(8 * (len(data) // PAGE))
    for page in reserved:
        struct.pack_into("<Q", flags, page // PAGE * 8, KPF_RESERVED)
    (folder / "mem").write_bytes(data)
    (folder / "kpageflags").write_bytes(flags)
    (folder / "iomem").write_text("00001000-003fffff : System RAM\n")
    return folder / "mem"


@pytest.fixture
def mem(tmp_path: Path) -> Path:
    return lay_out(tmp_path, entries())


def other(core: Path, mem: Path, *action: object, window: str = f"{WINDOW:#x}:{PAGES * PAGE:#x}",
          digest: str | None = None, program: list[object] | None = None
          ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*(program or [core / "khib-other"]), "--mem", mem,
                           "--ram", mem.with_name("iomem"),
                           "--kpageflags", mem.with_name("kpageflags"),
                           "--control-page", hex(CONTROL), "--window", window,
                           *(["--digest", digest] if digest else []), *map(str, action)],
                          capture_output=True, text=True, check=False)


def b_memory(mem: bytes) -> bytes:
    """B's window as B had it: each page where kexec swapped it to."""
    return b"".join(mem[source(i):source(i) + PAGE] for i in range(PAGES))


def digest_of(pairs: list[tuple[int, int]]) -> str:
    return hashlib.sha256(b"".join(struct.pack("<QQ", *pair) for pair in pairs)).hexdigest()


def test_list_names_the_pages_and_their_digest(core: Path, mem: Path) -> None:
    result = other(core, mem, "list")
    assert result.returncode == 0, result.stderr
    pairs = [(WINDOW + i * PAGE, source(i)) for i in range(PAGES)]
    assert result.stdout == f"pages={PAGES} digest={digest_of(pairs)}\n"
    # Another image than the one recorded: nothing read.
    refused = other(core, mem, "list", digest="0" * 64)
    assert refused.returncode == 1 and "is not the B that jumped back" in refused.stderr


def core_headers(data: bytes) -> list[tuple[int, ...]]:
    phoff, = struct.unpack_from("<Q", data, 32)
    phnum, = struct.unpack_from("<H", data, 56)
    return [struct.unpack_from("<IIQQQQQQ", data, phoff + 56 * i) for i in range(phnum)]


def test_core_is_bs_window_at_its_physical_addresses(core: Path, mem: Path,
                                                     tmp_path: Path) -> None:
    result = other(core, mem, "core", tmp_path / "b.core")
    assert result.returncode == 0, result.stderr
    data = (tmp_path / "b.core").read_bytes()
    assert data[:4] == b"\x7fELF" and data[16] == 4  # ET_CORE
    headers = core_headers(data)
    assert [h[0] for h in headers] == [4, 1]  # PT_NOTE (empty: no VMCOREINFO), one PT_LOAD
    _, _, offset, _, paddr, filesz, memsz, _ = headers[1]
    assert (paddr, filesz, memsz) == (WINDOW, PAGES * PAGE, PAGES * PAGE)
    assert data[offset:offset + filesz] == b_memory(mem.read_bytes())
    assert os.stat(tmp_path / "b.core").st_mode & 0o777 == 0o600


def plant_note(mem: Path, at: int, text: bytes) -> None:
    """A VMCOREINFO ELF note at ``at`` of the memory file."""
    data = bytearray(mem.read_bytes())
    note = struct.pack("<III", 11, len(text), 0) + b"VMCOREINFO\0\0" + text
    data[at:at + len(note)] = note
    mem.write_bytes(data)


def test_bs_note_is_read_in_its_window_only(core: Path, mem: Path, tmp_path: Path) -> None:
    """B's note, where B has it, goes into the core; at an address outside B's window, A's
    memory there is not read as B's."""
    plant_note(mem, source(2) + 0x100, NOTE_TEXT)  # B's page WINDOW + 2 pages
    plant_note(mem, ELSEWHERE, A_NOTE_TEXT)  # A's own page
    inside = other(core, mem, "core", tmp_path / "in.core", "--vmcoreinfo",
                   f"{WINDOW + 2 * PAGE + 0x100:#x}:{PAGE:#x}")
    assert inside.returncode == 0, inside.stderr
    assert "B's direct map is unknown (B's VMCOREINFO has no SIZE(page))" in inside.stderr
    data = (tmp_path / "in.core").read_bytes()
    note = core_headers(data)[0]
    assert NOTE_TEXT in data[note[2]:note[2] + note[5]]
    outside = other(core, mem, "core", tmp_path / "out.core", "--vmcoreinfo",
                    f"{ELSEWHERE:#x}:{PAGE:#x}")
    assert outside.returncode == 0, outside.stderr
    assert f"note at {ELSEWHERE:#x} is unreadable or not in B's window" in outside.stderr
    data = (tmp_path / "out.core").read_bytes()
    assert core_headers(data)[0][5] == 0 and A_NOTE_TEXT not in data


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
    for malformed in ("0x20000g", "", "+0x200000", " 0x200000"):
        result = other(core, mem, "poke", malformed, tmp_path / "bytes")
        assert result.returncode == 1 and "as numbers" in result.stderr, malformed
    assert "as numbers" in other(core, mem, "poke", hex(WINDOW), tmp_path / "bytes",
                                 "--same", "-1").stderr
    assert mem.read_bytes() == before
    # A list that puts a page outside the window is not B's image: nothing read.
    elsewhere = other(core, mem, "list", window=f"{WINDOW + PAGE:#x}:{PAGES * PAGE:#x}")
    assert elsewhere.returncode == 1 and "no loaded image of B" in elsewhere.stderr


def refused(core: Path, mem: Path, why: str) -> None:
    """Nothing read as B's, nothing written: the list is not one to trust."""
    before = mem.read_bytes()
    (mem.parent / "bytes").write_bytes(b"never written")
    for action in (["list"], ["poke", hex(WINDOW), mem.parent / "bytes"]):
        result = other(core, mem, *action)
        assert result.returncode == 1, result.stdout
        assert "no loaded image of B to read" in result.stderr and why in result.stderr, \
            result.stderr
    assert mem.read_bytes() == before


@pytest.mark.parametrize("page", ["control", "indirection", "source"])
def test_an_unloaded_image_is_refused(core: Path, tmp_path: Path, page: str) -> None:
    """The image was unloaded since B came back (kexec -u, and another kexec -l outside
    khib), its freed pages still holding the old list: kexec's pages are reserved, freed
    ones are not."""
    kept = {CONTROL, LIST, *(source(i) for i in range(PAGES))}
    kept.discard({"control": CONTROL, "indirection": LIST, "source": source(5)}[page])
    mem = lay_out(tmp_path, entries(), reserved=kept)
    refused(core, mem, "not reserved in /proc/kpageflags")


@pytest.mark.parametrize("sources", [
    [source(i) for i in range(PAGES - 1)] + [source(3)],  # two destinations, one source
    [source(i) for i in range(PAGES - 1)] + [LIST],  # the indirection page
    [CONTROL] + [source(i) for i in range(1, PAGES)],  # the control page
], ids=["shared", "indirection", "control"])
def test_a_source_used_twice_is_refused(core: Path, tmp_path: Path, sources: list[int]) -> None:
    """A write there would land in two of B's pages, or in A's kexec list itself."""
    refused(core, lay_out(tmp_path, entries(sources)), "is two of its pages")


def test_a_source_that_is_another_window_page_is_refused(core: Path, tmp_path: Path) -> None:
    """kexec makes a window page the source of its own destination only."""
    sources = [source(i) for i in range(PAGES)]
    sources[3] = WINDOW + 9 * PAGE
    refused(core, lay_out(tmp_path, entries(sources)), "another page's destination")


def max_rss_kib(argv: list[object]) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run argv from a fresh interpreter that reports its child's peak RSS."""
    probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], "
             "capture_output=True, text=True); sys.stderr.write(r.stderr); "
             "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    result = subprocess.run([sys.executable, "-c", probe, *map(str, argv)],
                            capture_output=True, text=True, check=False)
    code, rss = result.stdout.split()
    return subprocess.CompletedProcess(argv, int(code), "", result.stderr), int(rss)


@pytest.mark.parametrize("listed, why", [
    # Destination and source entries over and over, then the page itself again.
    ([*[WINDOW | IND_DESTINATION, SOURCES | IND_SOURCE] * 255, LIST | IND_INDIRECTION],
     "more pages than the window holds"),
    # An indirection page that names only itself.
    ([LIST | IND_INDIRECTION], "goes on past 2 pages of its own"),
    # More pages than the window.
    (entries([SOURCES + i * PAGE for i in range(PAGES + 1)]), "more pages than the window"),
    ([WINDOW + PAGES * PAGE | IND_DESTINATION, SOURCES | IND_SOURCE, IND_DONE],
     "a page outside the window"),
], ids=["looping", "itself", "oversized", "outside"])
def test_a_looping_or_oversized_list_stops_early(core: Path, tmp_path: Path,
                                                 listed: list[int], why: str) -> None:
    """Reading stops once the list names more pages than the window holds, or one outside
    it, or more pages of its own than such a list takes: small, and at once."""
    mem = lay_out(tmp_path, listed)
    result, rss = max_rss_kib([core / "khib-other", "--mem", mem, "--ram", tmp_path / "iomem",
                               "--kpageflags", tmp_path / "kpageflags", "--control-page",
                               hex(CONTROL), "--window", f"{WINDOW:#x}:{PAGES * PAGE:#x}",
                               "list"])
    assert result.returncode == 1 and why in result.stderr, result.stderr
    assert rss < 64 << 10, rss  # KiB: the interpreter that started it, and little more


@pytest.fixture(scope="module")
def i386_core(default_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """khib-core as the default (i386) image has it: static, run here as it is."""
    tree = tmp_path_factory.mktemp("i386-image")
    assert_ok(khib("extract", default_image, tree / "root"))
    return tree / "root" / "usr" / "sbin" / "khib-core"


@pytest.mark.slow  # builds the default i386 image (shared with the other tests)
def test_the_i386_list_is_read_in_32_bit_words(i386_core: Path, tmp_path: Path) -> None:
    """On i386 the list's entries are 32-bit and its head 0x1c after the control code."""
    mem = lay_out(tmp_path, entries(), word=4)
    program = [i386_core, "khib-other"]
    result = other(i386_core, mem, "list", program=program)
    assert result.returncode == 0, result.stderr
    pairs = [(WINDOW + i * PAGE, source(i)) for i in range(PAGES)]
    assert result.stdout == f"pages={PAGES} digest={digest_of(pairs)}\n"
    (tmp_path / "bytes").write_bytes(b"i386 bytes")
    poked = other(i386_core, mem, "poke", hex(WINDOW + 3 * PAGE), tmp_path / "bytes",
                  program=program)
    assert poked.returncode == 0, poked.stderr
    assert mem.read_bytes()[source(3):source(3) + 10] == b"i386 bytes"
    sources = [source(i) for i in range(PAGES)]
    sources[7] = sources[6]
    refused_mem = lay_out(tmp_path, entries(sources), word=4)
    shared = other(i386_core, refused_mem, "list", program=program)
    assert shared.returncode == 1 and "is two of its pages" in shared.stderr
