"""khib-save and khib-restore on the host, with files standing in for /dev/mem."""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import stat
import struct
import subprocess
import zlib
from pathlib import Path

from tests.helpers import (
    DATA,
    FREE,
    META,
    PAGE,
    SEAL,
    SEGMENTS,
    ZERO,
    MiB,
    blocks,
    fmt,
    loads,
    memory,
    note_places,
    notes,
    reseal,
    sealed_message,
    unpacked,
)


def run(core: Path, program: str, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([core / program, *map(str, args)], capture_output=True, text=True,
                          check=False)


def test_save_stores_data_records_zero_pages_and_checksums(core: Path, tmp_path: Path) -> None:
    mem = memory(tmp_path / "mem", 4 * MiB)
    # Two RAM ranges with a hole between, as /proc/iomem lists them; the hole is not saved.
    (tmp_path / "ranges").write_text("00001000-0009fbff : System RAM\n"
                                     "000a0000-000fffff : PCI Bus 0000:00\n"
                                     "00100000-003fffff : System RAM\n")
    result = run(core, "khib-save", "--mem", tmp_path / "mem", "--ranges", tmp_path / "ranges",
                 "-o", tmp_path / "image")
    assert result.returncode == 0, result.stderr
    segments, records = loads(tmp_path / "image")
    assert len(segments) == len(records) > 2
    image = (tmp_path / "image").read_bytes()
    covered = 0
    for load, (paddr, memsz, crc, kind) in zip(segments, records, strict=True):
        assert (load.paddr, load.memsz) == (paddr, memsz)
        content = mem[paddr:paddr + memsz]
        if load.filesz == 0:  # recorded, not stored: all zeros
            assert content == bytes(memsz) and (kind, crc) == (ZERO, 0)
        else:
            assert unpacked(image, load) == content and kind == DATA
            assert zlib.crc32(content) == crc
        assert not 0xa0000 <= paddr < 0x100000
        covered += memsz
    assert covered == (0x9fc00 - 0x1000) + (0x400000 - 0x100000)
    assert sum(r[1] // PAGE for r in records if r[3] == ZERO) > 100  # none of them stored
    assert len(image) < 4 * MiB * 0.8
    assert image.count(b"KHIB-TOKEN-12345") == 1
    assert "zero pages and 0 free pages recorded" in result.stdout
    assert "MiB of data stored in" in result.stdout


def holes_left_by(core: Path, tmp_path: Path, iomem: str) -> list[tuple[int, int]]:
    """Save 4 MiB of memory with --exclude taking ``iomem`` (B's /proc/iomem); the ranges
    the image leaves out."""
    memory(tmp_path / "mem", 4 * MiB)
    (tmp_path / "ranges").write_text("00000000-003fffff : System RAM\n")
    (tmp_path / "iomem").write_text(iomem)
    result = run(core, "khib-save", "--mem", tmp_path / "mem", "--ranges", tmp_path / "ranges",
                 "--exclude", tmp_path / "iomem", "-o", tmp_path / "image")
    assert result.returncode == 0, result.stderr
    segments, _ = loads(tmp_path / "image")
    spans = sorted((load.paddr, load.paddr + load.memsz) for load in segments)
    assert spans[0][0] == 0 and spans[-1][1] == 4 * MiB
    return [(end, start) for (_, end), (start, _) in itertools.pairwise(spans) if end != start]


def test_save_leaves_out_the_running_kernels_own_ram(core: Path, tmp_path: Path) -> None:
    """--exclude takes B's /proc/iomem: its System RAM holds B, not the old kernel."""
    assert holes_left_by(core, tmp_path, "00000000-00000fff : Reserved\n"
                                         "00001000-0009ffff : System RAM\n"
                                         "00200000-002fffff : System RAM\n"
                                         "  00200000-0020ffff : Kernel code\n") == [
        (0x1000, 0xa0000), (0x200000, 0x300000)]
    # The token at 0x12345 lies in the excluded low RAM.
    assert b"KHIB-TOKEN-12345" not in (tmp_path / "image").read_bytes()


def test_restore_writes_back_and_verifies(core: Path, tmp_path: Path) -> None:
    mem = memory(tmp_path / "mem", 2 * MiB)
    (tmp_path / "ranges").write_text("00000000-001fffff\n")
    assert run(core, "khib-save", "--mem", tmp_path / "mem", "--ranges", tmp_path / "ranges",
               "-o", tmp_path / "image").returncode == 0
    target = tmp_path / "target"
    target.write_bytes(os.urandom(2 * MiB))  # another kernel's garbage
    check = run(core, "khib-restore", tmp_path / "image", "--mem", target, "--verify")
    assert check.returncode == 1 and "differs from the image" in check.stderr
    result = run(core, "khib-restore", tmp_path / "image", "--mem", target)
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == mem
    assert "verified" in result.stdout


def test_a_damaged_image_is_refused(core: Path, tmp_path: Path) -> None:
    memory(tmp_path / "mem", MiB)
    (tmp_path / "ranges").write_text("00000000-000fffff\n")
    run(core, "khib-save", "--mem", tmp_path / "mem", "--ranges", tmp_path / "ranges",
        "-o", tmp_path / "image")
    data = bytearray((tmp_path / "image").read_bytes())
    last = [load for load in loads(tmp_path / "image")[0] if load.filesz][-1]
    data[last.offset + last.filesz - 100] ^= 0xFF  # one flipped byte in the stored pages
    (tmp_path / "image").write_bytes(data)
    target = tmp_path / "target"
    target.write_bytes(bytes(MiB))
    result = run(core, "khib-restore", tmp_path / "image", "--mem", target)
    assert result.returncode == 1
    assert "does not match its checksum" in result.stderr, result.stderr
    assert "does not match its SHA-256 seal" in result.stderr
    assert "nothing written" in result.stderr
    assert target.read_bytes() == bytes(MiB)  # checked before a byte was written
    check = run(core, "khib-restore", tmp_path / "image", "--check")
    assert check.returncode == 1 and "segment" in check.stderr


def saved(core: Path, tmp_path: Path, size: int, *extra: object) -> bytes:
    """Save a memory file of ``size`` bytes to tmp_path/image; the memory's bytes."""
    mem = memory(tmp_path / "mem", size)
    (tmp_path / "ranges").write_text(f"00000000-{size - 1:08x}\n")
    result = run(core, "khib-save", "--mem", tmp_path / "mem", "--ranges", tmp_path / "ranges",
                 "-o", tmp_path / "image", *extra)
    assert result.returncode == 0, result.stderr
    return mem


def test_the_seal_covers_notes_and_every_stored_byte(core: Path, tmp_path: Path) -> None:
    (tmp_path / "meta.json").write_text('{"entry": "0x1bf0fb", "boot_id": "abc"}')
    saved(core, tmp_path, 2 * MiB, "--meta", tmp_path / "meta.json")
    data = (tmp_path / "image").read_bytes()
    found = notes(data)
    assert found[META] == b'{"entry": "0x1bf0fb", "boot_id": "abc"}'
    image_size, keyed, digest = struct.unpack_from("<QQ32s", found[SEAL])
    assert (image_size, keyed) == (len(data), 0)
    assert hashlib.sha256(sealed_message(data)).digest() == digest
    check = run(core, "khib-restore", tmp_path / "image", "--check")
    assert check.returncode == 0 and "the seal holds" in check.stdout


def test_a_keyed_image_is_refused_when_changed_or_cut_short(core: Path, tmp_path: Path) -> None:
    """Under --key, an image whose data was changed (checksums and SHA-256 seal recomputed)
    or that was truncated is refused before a byte is written; a key needs a keyed image
    and a keyed image needs the key."""
    key, other = tmp_path / "key", tmp_path / "other"
    key.write_bytes(os.urandom(32))
    other.write_bytes(os.urandom(32))
    mem = saved(core, tmp_path, 2 * MiB, "--key", key)
    good = (tmp_path / "image").read_bytes()
    assert run(core, "khib-restore", tmp_path / "image", "--check", "--key", key).returncode == 0
    target = tmp_path / "target"
    cases = {"wrong key": (good, other, "fails its HMAC"),
             "no key": (good, None, "the image is keyed: it needs its key")}
    segments, _ = loads(tmp_path / "image")
    at, _, raw = next(b for s in segments if s.filesz for b in blocks(good, s))
    assert raw  # random pages: kept as they are
    changed = bytearray(good)
    changed[at + 100] ^= 0xFF
    (tmp_path / "image").write_bytes(changed)
    reseal(tmp_path / "image")
    resealed = run(core, "khib-restore", tmp_path / "image", "--check", "--key", key)
    assert resealed.stderr.count("khib:") == 1 and "fails its HMAC" in resealed.stderr
    cases["changed, resealed"] = ((tmp_path / "image").read_bytes(), key, "fails its HMAC")
    cases["truncated"] = (good[:len(good) - PAGE], key, "")
    for label, (image, with_key, message) in cases.items():
        (tmp_path / "image").write_bytes(image)
        target.write_bytes(b"\xee" * (2 * MiB))  # a canary
        result = run(core, "khib-restore", tmp_path / "image", "--mem", target,
                     *(("--key", with_key) if with_key else ()))
        assert result.returncode == 1, label
        assert message in result.stderr and "nothing written" in result.stderr, label
        assert target.read_bytes() == b"\xee" * (2 * MiB), label
    (tmp_path / "image").write_bytes(good)
    result = run(core, "khib-restore", tmp_path / "image", "--mem", target, "--key", key)
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == mem
    unkeyed = saved(core, tmp_path, MiB)
    refused = run(core, "khib-restore", tmp_path / "image", "--check", "--key", key)
    assert refused.returncode == 1 and "not keyed: refused under a key" in refused.stderr
    assert unkeyed


def test_a_save_that_does_not_fit_leaves_no_complete_image(core: Path, tmp_path: Path) -> None:
    """The image never grows past its room; an earlier image no longer counts."""
    saved(core, tmp_path, 2 * MiB)  # an earlier, complete image in the same place
    result = run(core, "khib-save", "--mem", tmp_path / "mem", "--ranges", tmp_path / "ranges",
                 "-o", tmp_path / "image", "--limit", MiB)
    assert result.returncode == 1
    assert "the image outgrew the room there (1 MiB): nothing saved" in result.stderr
    assert (tmp_path / "image").read_bytes()[:PAGE] == bytes(PAGE)
    for args in (("--check",), ("--mem", tmp_path / "mem")):
        refused = run(core, "khib-restore", tmp_path / "image", *args)
        assert refused.returncode == 1
        assert "no complete image (a save did not finish" in refused.stderr


def test_a_used_image_is_not_restored_again(core: Path, tmp_path: Path) -> None:
    saved(core, tmp_path, MiB)
    with (tmp_path / "image").open("r+b") as image:
        image.write(b"KUSD")  # what a resume leaves
    target = tmp_path / "target"
    target.write_bytes(bytes(MiB))
    result = run(core, "khib-restore", tmp_path / "image", "--mem", target)
    assert result.returncode == 1 and "no hibernation image" in result.stderr
    assert target.read_bytes() == bytes(MiB)


def test_restore_refuses_to_write_over_the_running_kernel(core: Path, tmp_path: Path) -> None:
    """Segments in the running kernel's System RAM are refused, before any write; RAM it
    set aside with crashkernel= (and never allocates from) is not its own."""
    mem = saved(core, tmp_path, 2 * MiB)
    target = tmp_path / "target"
    target.write_bytes(bytes(2 * MiB))
    (tmp_path / "iomem").write_text("00000000-00000fff : Reserved\n"
                                    "00100000-001fffff : System RAM\n")
    result = run(core, "khib-restore", tmp_path / "image", "--mem", target,
                 "--running", tmp_path / "iomem")
    assert result.returncode == 1
    assert "overlaps this kernel's own RAM 0x100000-0x1fffff" in result.stderr
    assert target.read_bytes() == bytes(2 * MiB)
    (tmp_path / "iomem").write_text("00100000-001fffff : System RAM\n"
                                    "  00100000-001fffff : Crash kernel\n")
    result = run(core, "khib-restore", tmp_path / "image", "--mem", target,
                 "--running", tmp_path / "iomem")
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == mem


def test_save_keeps_what_the_running_kernel_reserved_for_a_crash_kernel(core: Path,
                                                                        tmp_path: Path) -> None:
    """B runs with crashkernel=15M@1M over A's 1-16 MiB: that RAM holds A, and is saved."""
    assert holes_left_by(core, tmp_path, "00001000-0009ffff : System RAM\n"
                                         "00100000-002fffff : System RAM\n"
                                         "  00100000-001fffff : Crash kernel\n") == [
        (0x1000, 0xa0000), (0x200000, 0x300000)]


def test_export_is_a_plain_core_of_the_memory(core: Path, tmp_path: Path) -> None:
    """khib-restore --export: every range as a PT_LOAD holding its bytes (zero runs as
    zeros), the image checked first."""
    mem = memory(tmp_path / "mem", 4 * MiB)
    (tmp_path / "ranges").write_text("00001000-0009ffff\n00100000-003fffff\n")
    run(core, "khib-save", "--mem", tmp_path / "mem", "--ranges", tmp_path / "ranges",
        "-o", tmp_path / "image")
    segments, _ = loads(tmp_path / "image")
    assert len(segments) > 16  # zero runs and data alternate
    result = run(core, "khib-restore", tmp_path / "image", "--export", tmp_path / "core")
    assert result.returncode == 0, result.stderr
    data = (tmp_path / "core").read_bytes()
    phoff, = struct.unpack_from("<Q", data, 32)
    phnum, = struct.unpack_from("<H", data, 56)
    ranges = []
    for i in range(phnum):
        kind, _, offset, _, paddr, filesz, memsz, _ = struct.unpack_from(
            "<IIQQQQQQ", data, phoff + 56 * i)
        if kind == 1:
            assert filesz == memsz and data[offset:offset + filesz] == mem[paddr:paddr + memsz]
            ranges.append((paddr, memsz))
    assert ranges == [(0x1000, 0x9F000), (0x100000, 0x300000)]


def test_compressible_memory_is_stored_in_lz4_blocks(core: Path, tmp_path: Path) -> None:
    """Text-like pages are stored LZ4-compressed (python-lz4 decodes every block to the
    memory's bytes) and restored exactly; random pages stay as they are."""
    rng = random.Random(11)
    words = [bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz_", k=rng.randint(3, 12)))
             for _ in range(300)]
    text = b" ".join(rng.choices(words, k=400_000))[:3 * MiB]
    mem = text + rng.randbytes(MiB)
    (tmp_path / "mem").write_bytes(mem)
    (tmp_path / "ranges").write_text(f"00000000-{len(mem) - 1:08x}\n")
    result = run(core, "khib-save", "--mem", tmp_path / "mem", "--ranges", tmp_path / "ranges",
                 "-o", tmp_path / "image")
    assert result.returncode == 0, result.stderr
    data = (tmp_path / "image").read_bytes()
    (segment,), _ = loads(tmp_path / "image")
    found = blocks(data, segment)
    assert len(found) == 16
    assert not any(raw for _, _, raw in found[:12]) and all(raw for _, _, raw in found[12:])
    assert unpacked(data, segment) == mem
    assert len(data) < MiB + 3 * MiB // 2  # the text at least halves
    target = tmp_path / "target"
    target.write_bytes(bytes(len(mem)))
    assert run(core, "khib-restore", tmp_path / "image", "--mem", target).returncode == 0
    assert target.read_bytes() == mem


def test_free_pages_are_stored_when_the_note_cannot_be_read(core: Path, tmp_path: Path) -> None:
    """Without a readable VMCOREINFO note, khib-save says why and stores every page."""
    mem = memory(tmp_path / "mem", MiB)
    (tmp_path / "ranges").write_text(f"00000000-{MiB - 1:08x}\n")
    result = run(core, "khib-save", "--mem", tmp_path / "mem", "--ranges", tmp_path / "ranges",
                 "-o", tmp_path / "image", "--vmcoreinfo", "0x1000:0x1000")
    assert result.returncode == 0
    assert ("khib-save: the old kernel's free pages are stored: A's VMCOREINFO note at 0x1000 "
            "is unreadable") in result.stderr
    _, records = loads(tmp_path / "image")
    assert FREE not in {kind for *_, kind in records}
    target = tmp_path / "target"
    target.write_bytes(bytes(MiB))
    assert run(core, "khib-restore", tmp_path / "image", "--mem", target).returncode == 0
    assert target.read_bytes() == mem


def test_images_and_exports_are_private(core: Path, tmp_path: Path) -> None:
    """An image holds all of A's memory: 0600 whatever the umask, and so is an export,
    even over a file that was there before with other permissions."""
    memory(tmp_path / "mem", MiB)
    (tmp_path / "ranges").write_text(f"00000000-{MiB - 1:08x}\n")
    for name in ("image", "core"):
        (tmp_path / name).write_bytes(b"an older file")
        (tmp_path / name).chmod(0o644)
    saved = subprocess.run([core / "khib-save", "--mem", tmp_path / "mem", "--ranges",
                            tmp_path / "ranges", "-o", tmp_path / "image"], umask=0,
                           capture_output=True, check=False)
    assert saved.returncode == 0
    exported = subprocess.run([core / "khib-restore", tmp_path / "image", "--export",
                               tmp_path / "core"], umask=0, capture_output=True, check=False)
    assert exported.returncode == 0
    for name in ("image", "core"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name


def test_too_many_runs_are_refused_as_soon_as_they_are_found(core: Path,
                                                             tmp_path: Path) -> None:
    """Data and zero pages alternating over 512 MiB: more runs than one image counts. The
    save stops at the first run too many, with nothing complete, not after the trailer."""
    with (tmp_path / "mem").open("wb") as sparse:
        for page in range(0, 131072, 2):
            sparse.seek(page * PAGE)
            sparse.write(b"\x01")
        sparse.truncate(131072 * PAGE)
    (tmp_path / "ranges").write_text(f"00000000-{131072 * PAGE - 1:08x}\n")
    result = run(core, "khib-save", "--mem", tmp_path / "mem", "--ranges", tmp_path / "ranges",
                 "-o", tmp_path / "image")
    assert result.returncode == 1
    assert (f"A's memory falls into more than {fmt.SEGMENTS_MAX} runs" in result.stderr
            and "nothing saved" in result.stderr), result.stderr
    assert (tmp_path / "image").read_bytes()[:4] == bytes(4)
    assert "saved 512/512 MiB" not in result.stderr  # it stopped before the end


def test_verify_leaves_free_pages_out(core: Path, tmp_path: Path) -> None:
    """In B, --verify compares A's live memory with the image: A's free pages hold
    anything by then and are not differences."""
    mem = memory(tmp_path / "mem", MiB)
    (tmp_path / "ranges").write_text(f"00000000-{MiB - 1:08x}\n")
    assert run(core, "khib-save", "--mem", tmp_path / "mem", "--ranges", tmp_path / "ranges",
               "-o", tmp_path / "image").returncode == 0
    image = bytearray((tmp_path / "image").read_bytes())
    segments, records = loads(bytes(image))
    index = next(i for i, (*_, kind) in enumerate(records) if kind == ZERO)
    at, _ = note_places(bytes(image))[SEGMENTS]
    struct.pack_into("<I", image, at + 24 * index + 20, FREE)  # the zero run was free
    (tmp_path / "image").write_bytes(image)
    reseal(tmp_path / "image")
    live = bytearray(mem)
    live[segments[index].paddr:segments[index].paddr + PAGE] = b"\x5a" * PAGE
    (tmp_path / "live").write_bytes(live)
    verified = run(core, "khib-restore", tmp_path / "image", "--mem", tmp_path / "live",
                   "--verify")
    assert verified.returncode == 0, verified.stderr
    assert "compared and verified" in verified.stdout


def test_the_free_page_walk_reads_only_the_releases_it_knows(core: Path,
                                                             tmp_path: Path) -> None:
    """The walk reads the marker of 5.10 to 7.2 (a whole word to 6.11, a page type in its
    top byte from 6.12); another release's pages are stored, and khib-save says why."""
    for release in ("5.4.0", "7.3.1"):
        why = run_unknown_release(core, tmp_path, release)
        assert (f"the old kernel's free pages are stored: A runs Linux {release[:3]}: its free "
                "pages are marked in a way khib does not read (it reads 5.10 to "
                "7.2)") in why
    # 6.12's marker is a type in the top byte: a value with low bits set is not one.
    why = run_unknown_release(core, tmp_path, "6.12.117", "SIZE(page)=64\n"
                              "OFFSET(page._mapcount)=48\nOFFSET(page.private)=40\n"
                              "NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-129\n"
                              "LENGTH(zone.free_area)=11\n")
    assert "A's buddy marker 0xffffff7f is not a page type in the top byte" in why


def run_unknown_release(core: Path, tmp_path: Path, release: str, more: str = "") -> str:
    """khib-save's standard error over memory whose VMCOREINFO names ``release``."""
    text = f"OSRELEASE={release}\nPAGESIZE=4096\n{more}".encode()
    note = struct.pack("<III", 11, len(text), 0) + b"VMCOREINFO\0\0" + text
    mem = bytearray(memory(tmp_path / "mem", MiB))
    mem[0x8000:0x8000 + len(note)] = note
    (tmp_path / "mem").write_bytes(mem)
    (tmp_path / "ranges").write_text(f"00000000-{MiB - 1:08x}\n")
    result = run(core, "khib-save", "--mem", tmp_path / "mem", "--ranges", tmp_path / "ranges",
                 "-o", tmp_path / "image", "--vmcoreinfo", f"0x8000:{len(note):#x}")
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_the_image_is_the_same_whatever_the_number_of_threads(
        core: Path, thread_sanitized_core: Path, tmp_path: Path) -> None:
    """khib-save packs a batch of blocks on several threads: the image is byte for byte
    the one a single thread makes (runs of every length, partial blocks, compressible and
    random pages, more than one batch), and restores the memory; ThreadSanitizer finds
    no race on four threads; a number of threads that is not one is refused."""
    rng = random.Random(5)
    pages = []
    for index in range(3 * MiB // PAGE):
        kind = (index // 37) % 4
        pages.append(bytes(PAGE) if kind == 0 or index % 11 == 5 else
                     rng.randbytes(PAGE) if kind == 1 else
                     bytes(rng.choices(b"khib ", k=PAGE)))
    mem = b"".join(pages) * 4
    (tmp_path / "mem").write_bytes(mem)
    (tmp_path / "ranges").write_text(f"00000000-{len(mem) - 1:08x}\n")
    images = []
    for threads in (1, 2, 3, 4, 9):
        out = tmp_path / f"image-{threads}"
        result = run(core, "khib-save", "--mem", tmp_path / "mem", "--ranges",
                     tmp_path / "ranges", "-o", out, "--threads", threads)
        assert result.returncode == 0, result.stderr
        images.append(out.read_bytes())
    raced = subprocess.run([thread_sanitized_core / "khib-save", "--mem", tmp_path / "mem",
                            "--ranges", tmp_path / "ranges", "-o", tmp_path / "image-tsan",
                            "--threads", "4"], capture_output=True, text=True, check=False,
                           env={**os.environ, "TSAN_OPTIONS": "halt_on_error=1 exitcode=66"})
    assert raced.returncode == 0 and "ThreadSanitizer" not in raced.stderr, raced.stderr
    images.append((tmp_path / "image-tsan").read_bytes())
    assert len(set(images)) == 1
    for wrong in ("abc", "0", "-1", "2x"):
        refused = run(core, "khib-save", "--mem", tmp_path / "mem", "--ranges",
                      tmp_path / "ranges", "-o", tmp_path / "image-x", "--threads", wrong)
        assert refused.returncode == 2 and "usage" in refused.stderr, wrong
    segments, _ = loads(tmp_path / "image-1")
    assert sum(len(blocks(images[0], load)) for load in segments if load.filesz) > 16
    target = tmp_path / "target"
    target.write_bytes(os.urandom(len(mem)))
    result = run(core, "khib-restore", tmp_path / "image-2", "--mem", target)
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == mem


CRC_C = r"""
#include "khib-core.h"
int main(int argc, char **argv)
{
    static unsigned char data[70000];
    FILE *file = argc > 1 ? fopen(argv[1], "rb") : NULL;
    size_t size = file ? fread(data, 1, sizeof(data), file) : 0;
    unsigned offset, length, seed;
    while (scanf("%u %u %u", &offset, &length, &seed) == 3 && offset + length <= size)
        printf("%u %u\n", (unsigned)khib_crc32(seed, data + offset, length),
               (unsigned)khib_crc32_table(seed, data + offset, length));
    return 0;
}
"""


def test_crc32_is_zlibs_by_pclmulqdq_and_by_the_tables(tmp_path: Path) -> None:
    """khib_crc32 (PCLMULQDQ folding where the CPU has it) and the tables B's CPU uses
    give zlib's CRC-32 at any offset, length and starting CRC, on x86_64 and i386."""
    src = Path(__file__).resolve().parent.parent / "recipes" / "khib-core" / "src"
    (tmp_path / "crc.c").write_text(CRC_C)
    rng = random.Random(3)
    data = rng.randbytes(70000)
    (tmp_path / "data").write_bytes(data)
    cases = [(rng.randrange(64), rng.choice([0, 1, 15, 16, 63, 64, 65, 127, 128, 4096,
                                             rng.randrange(69000)]), rng.getrandbits(32))
             for _ in range(400)]
    m32 = subprocess.run(["gcc", "-m32", "-x", "c", "-o", os.devnull, "-"],
                         input="int main(void){return 0;}", text=True, capture_output=True,
                         check=False).returncode == 0
    for arch in ["-m64", "-m32"] if m32 else ["-m64"]:
        subprocess.run(["gcc", arch, "-O2", "-std=c99", "-Wall", "-Werror", "-Wconversion",
                        "-Wno-sign-conversion", "-I", src, "-o", tmp_path / "crc",
                        tmp_path / "crc.c", src / "checksum.c"], check=True)
        out = subprocess.run([tmp_path / "crc", tmp_path / "data"], capture_output=True,
                             input="".join(f"{o} {n} {s}\n" for o, n, s in cases),
                             text=True, check=True).stdout.splitlines()
        assert len(out) == len(cases)
        for (offset, length, seed), line in zip(cases, out, strict=True):
            want = zlib.crc32(data[offset:offset + length], seed)
            assert line.split() == [str(want), str(want)], (arch, offset, length, seed)
