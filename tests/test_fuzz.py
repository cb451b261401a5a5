"""khib-restore built with AddressSanitizer and UBSan, fed a fixed-seed stream of mutated
images: real ones with bits flipped, header, note, record and block fields set to extreme
values, or cut short; and ones taken apart, changed (segments overlapping, unsorted,
wrapping, huge or stored past the end; notes repeated, missing or lying about their size)
and sealed again. Never a sanitizer report or a crash; nothing written when an image is
refused; an image as it was sealed accepted only when the change missed every byte its
seal covers, and then restored to exactly the memory it was saved from."""

from __future__ import annotations

import copy
import hashlib
import hmac
import os
import random
import struct
import subprocess
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import (
    BLOCK,
    DATA,
    FREE,
    LAYOUT,
    META,
    PAGE,
    PT_MEMORY,
    RAW,
    SEAL,
    SEGMENTS,
    ZERO,
    MiB,
    blocks,
    loads_of,
    memory,
    note_places,
)

pytestmark = pytest.mark.slow  # about 30 s: 2,800 runs under the sanitizers

SEED = 20261207
AS_SEALED_RUNS = 1200  # mutations of the images as khib-save wrote them
RESEALED_RUNS = 400  # changes to their parts, sealed again
SIZE = MiB
TOP = 1 << 64  # the physical address space's end
CANARY = b"\xee" * SIZE
RUNNING = "10000000-1fffffff : System RAM\n"  # the running kernel's RAM: off limits
SANITIZERS = {"ASAN_OPTIONS": "exitcode=86:detect_leaks={leaks}",
              "UBSAN_OPTIONS": "exitcode=87:print_stacktrace=1"}
REPORTS = ("Sanitizer", "runtime error:")
KHIB, VMCOREINFO = b"KHIB\0", b"VMCOREINFO\0"
CORPUS = Path(__file__).parent / "fuzz-corpus"

ELF_FIELDS = ((16, 2), (18, 2), (20, 4), (24, 8), (32, 8), (40, 8), (48, 4), (52, 2),
              (54, 2), (56, 2), (58, 2), (60, 2), (62, 2))
PHDR_FIELDS = ((0, 4), (4, 4), (8, 8), (16, 8), (24, 8), (32, 8), (40, 8), (48, 8))
RECORD_FIELDS = ((0, 8), (8, 8), (16, 4), (20, 4))


def sanitized(leaks: bool) -> dict[str, str]:
    """The environment of a sanitized run."""
    return {**os.environ, **{name: value.format(leaks=int(leaks))
                             for name, value in SANITIZERS.items()}}


def fuzz_memory(path: Path) -> bytes:
    """helpers.memory's pages (runs of data and zeros, a block each), 384 KiB of text at
    the end (two LZ4 blocks), a VMCOREINFO note at 0x5000 (of a kernel too old for its
    free pages to be read: the note is kept, every page stored) and a kexec backup list
    in a control page at 0x6000 (two window pages: the layout note's pairs)."""
    mem = bytearray(memory(path, SIZE))
    rng = random.Random(3)
    words = [bytes(rng.choices(b"abcdefghijklmnop", k=rng.randint(3, 9))) for _ in range(50)]
    mem[640 << 10:] = b" ".join(rng.choices(words, k=100_000))[:384 << 10]
    text = b"OSRELEASE=4.19.0\nPAGESIZE=4096\n"
    note = struct.pack("<III", 11, len(text), 0) + VMCOREINFO + b"\0" + text
    mem[0x5000:0x5000 + len(note)] = note
    struct.pack_into("<Q", mem, 0x6830, 0x7000 | 2)  # the list: an indirection page, then
    struct.pack_into("<4Q", mem, 0x7000, 0xF0000000 | 1, 0x9000 | 8, 0xA000 | 8, 4)
    path.write_bytes(mem)
    return bytes(mem)


def pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


@dataclass
class Parts:
    """An image taken apart, to be changed and sealed again (assemble)."""

    head: bytes  # up to the program headers: the first page and the stored blocks
    phdrs: list[list[int]]  # each memory header's type, offset, paddr, filesz, memsz
    records: list[list[int]]  # paddr, memsz, crc32, kind
    notes: list[tuple[bytes, int, bytes]]  # between records and seal: owner, type, descriptor
    note_filesz: int | None = None  # the PT_NOTE's p_filesz, when not its size
    lies: dict[int, int] = field(default_factory=dict)  # n_descsz by note (0: the records)


def parts_of(image: bytes) -> Parts:
    phoff, = struct.unpack_from("<Q", image, 32)
    phnum, = struct.unpack_from("<H", image, 56)
    phdrs = [struct.unpack_from("<IIQQQQQQ", image, phoff + 56 * i) for i in range(phnum)]
    found, at = [], phdrs[0][2]
    while at < phdrs[0][2] + phdrs[0][5]:
        namesz, descsz, kind = struct.unpack_from("<III", image, at)
        desc_at = at + 12 + len(pad(bytes(namesz)))
        found.append((image[at + 12:at + 12 + namesz], kind, image[desc_at:desc_at + descsz]))
        at = desc_at + len(pad(bytes(descsz)))
    records = found[0][2]
    return Parts(image[:phoff], [[t, offset, paddr, filesz, memsz]
                                 for t, _, offset, _, paddr, filesz, memsz, _ in phdrs[1:]],
                 [list(struct.unpack_from("<QQII", records, at))
                  for at in range(0, len(records), 24)], found[1:-1])


def stored_digest(parts: Parts) -> bytes:
    """The SHA-256 of the list of each stored block's SHA-256, as far as the blocks go."""
    digests = []
    for kind, offset, _, filesz, memsz in parts.phdrs:
        at, end, covered = offset, min(offset + filesz, len(parts.head)), 0
        while kind == PT_MEMORY and covered < memsz and at + 4 <= end:
            length = int.from_bytes(parts.head[at:at + 4], "little") & ~RAW
            digests.append(hashlib.sha256(parts.head[at:at + 4 + length]).digest())
            at, covered = at + 4 + length, covered + BLOCK
    return hashlib.sha256(b"".join(digests)).digest()


def assemble(parts: Parts, key: bytes | None) -> bytes:
    """The image of ``parts``, sealed as khib-save seals (with ``key``, its HMAC too)."""
    records = b"".join(struct.pack("<QQII", *record) for record in parts.records)
    body = b"".join(struct.pack("<III", len(owner), parts.lies.get(i, len(desc)), kind)
                    + pad(owner) + pad(desc) for i, (owner, kind, desc)
                    in enumerate([(KHIB, SEGMENTS, records), *parts.notes]))
    phoff, count = len(parts.head), len(parts.phdrs) + 1
    size = len(body) + 100  # and the seal's note
    table = struct.pack("<IIQQQQQQ", 4, 0, phoff + 56 * count, 0, 0,
                        size if parts.note_filesz is None else parts.note_filesz, 0, 0)
    table += b"".join(struct.pack("<IIQQQQQQ", kind, 7, offset, 0, paddr, filesz, memsz, PAGE)
                      for kind, offset, paddr, filesz, memsz in parts.phdrs)
    first: dict[int | bytes, bytes] = {}
    for owner, kind, desc in parts.notes:
        first.setdefault(kind if owner == KHIB else owner, desc)
    message = (stored_digest(parts) + table + records + first.get(META, b"")
               + first.get(LAYOUT, bytes(40)) + first.get(VMCOREINFO, b""))
    seal = struct.pack("<QQ32s32s", phoff + len(table) + size, 1 if key else 0,
                       hashlib.sha256(message).digest(),
                       hmac.new(key, message, "sha256").digest() if key else bytes(32))
    header = bytearray(parts.head[:64])
    struct.pack_into("<Q", header, 32, phoff)
    struct.pack_into("<H", header, 56, count)
    return (bytes(header) + parts.head[64:] + table + body
            + struct.pack("<III", 5, len(seal), SEAL) + pad(KHIB) + seal)


def sealed_bytes(image: bytes, keyed: bool) -> bytes:
    """1 for each byte the seal covers: stored blocks, program headers, descriptors, and
    the seal's own flag and digests (an unkeyed one's HMAC is never read)."""
    mask = bytearray(len(image))
    phoff, = struct.unpack_from("<Q", image, 32)
    phnum, = struct.unpack_from("<H", image, 56)
    places = note_places(image)
    seal_at, _ = places[SEAL]
    covered = [(phoff, 56 * phnum), (seal_at + 8, 72 if keyed else 40),
               *(places[key] for key in (SEGMENTS, META, LAYOUT, "VMCOREINFO")),
               *((load.offset, load.filesz) for load in loads_of(image))]
    for at, size in covered:
        mask[at:at + size] = b"\1" * size
    return bytes(mask)


def fields_of(image: bytes) -> list[tuple[int, int]]:
    """(offset, width) of every field of the ELF header, program headers, note headers,
    records, layout, seal and block headers."""
    phoff, = struct.unpack_from("<Q", image, 32)
    phnum, = struct.unpack_from("<H", image, 56)
    places = note_places(image)
    found = [(at, 1) for at in range(4, 16)] + list(ELF_FIELDS)
    found += [(phoff + 56 * i + at, width) for i in range(phnum) for at, width in PHDR_FIELDS]
    for key, (at, _) in places.items():
        header = at - (24 if key == "VMCOREINFO" else 20)
        found += [(header, 4), (header + 4, 4), (header + 8, 4)]
    records_at, records_size = places[SEGMENTS]
    found += [(records_at + k + at, width) for k in range(0, records_size, 24)
              for at, width in RECORD_FIELDS]
    found += [(places[LAYOUT][0] + 8 * k, 8) for k in range(5)]
    found += [(places[SEAL][0], 8), (places[SEAL][0] + 8, 8)]
    found += [(at - 4, 4) for load in loads_of(image) if load.filesz
              for at, _, _ in blocks(image, load)]
    return found


def extreme(rng: random.Random, value: int, width: int, size: int) -> int:
    """A value for a field of ``width`` bytes that held ``value``, in an image of ``size``."""
    top = (1 << 8 * width) - 1
    picks = [0, 1, top, top - 1, top >> 1, (top >> 1) + 1, value + 1, value - 1, 2 * value,
             value + PAGE, value ^ 1 << rng.randrange(8 * width), rng.getrandbits(8 * width)]
    if width == 8:
        picks += [1 << 32, (1 << 32) - 1, 1 << 63, size, size + PAGE, top - PAGE + 1]
    if width == 4:
        picks += [RAW, RAW | BLOCK, value ^ RAW]
    return rng.choice(picks) & top


@dataclass(frozen=True)
class Seed:
    """An image khib-save wrote, and what the fuzz needs to know of it."""

    image: bytes
    key: Path | None
    sealed: bytes  # sealed_bytes
    fields: list[tuple[int, int]]  # fields_of
    parts: Parts
    export: bytes  # its --export, past the ELF header (which carries e_machine)


def mutate(rng: random.Random, seed: Seed) -> tuple[bytes, list[int], str]:
    """A mutation of the seed as it was sealed: the image, the offsets it changed, what."""
    data, size = bytearray(seed.image), len(seed.image)
    trailer = len(seed.parts.head)
    how = rng.choices(("flip", "field", "cut", "splice"), weights=(30, 45, 10, 15))[0]
    if how == "cut":
        cut = rng.randrange(trailer if rng.random() < 0.5 else 0, size)
        return bytes(data[:cut]), list(range(cut, size)), f"cut at {cut}"
    touched: set[int] = set()
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        if how == "flip":
            at, width = rng.choice((rng.randrange(trailer, size), rng.randrange(64),
                                    rng.randrange(size))), 1
            data[at] ^= 1 << rng.randrange(8)
        elif how == "field":
            at, width = rng.choice(seed.fields)
            value = extreme(rng, int.from_bytes(data[at:at + width], "little"), width, size)
            data[at:at + width] = value.to_bytes(width, "little")
        else:
            width = rng.randint(4, 64)
            source, at = rng.randrange(size - width), rng.randrange(trailer, size - width)
            data[at:at + width] = seed.image[source:source + width]
        touched.update(range(at, at + width))
    changed = sorted(at for at in touched if data[at] != seed.image[at])
    return bytes(data), changed, f"{how} at {changed[:8]}"


def reshape(rng: random.Random, parts: Parts, size: int) -> str:
    """One change to an image's parts (its seal is redone after): a field at an extreme,
    segments swapped, repeated, dropped or added, a note repeated, dropped or lying."""
    phdrs, records, notes = parts.phdrs, parts.records, parts.notes
    i = rng.randrange(len(phdrs))
    how = rng.choice(("phdr", "both", "record", "swap", "repeat", "drop", "add", "note",
                      "lie", "note_filesz"))
    if how in ("phdr", "both"):
        j = rng.randrange(1, 5)  # offset, paddr, filesz, memsz
        phdrs[i][j] = extreme(rng, phdrs[i][j], 8, size)
        if how == "both" and j in (2, 4):
            records[i][j // 2 - 1] = phdrs[i][j]
    elif how == "record":
        j = rng.randrange(4)
        records[i][j] = extreme(rng, records[i][j], RECORD_FIELDS[j][1], size)
    elif how == "swap" and i + 1 < len(phdrs):
        phdrs[i:i + 2], records[i:i + 2] = phdrs[i:i + 2][::-1], records[i:i + 2][::-1]
    elif how == "repeat":
        phdrs.insert(i, list(phdrs[i]))
        records.insert(i, list(records[i]))
    elif how == "drop":
        for kept in rng.choice(((phdrs, records), (phdrs,), (records,))):
            del kept[i]
    elif how == "add":  # after the last: beyond the canary, over the running kernel, huge
        end = records[-1][0] + records[-1][1]
        paddr = rng.choice((end, end + PAGE, 2 * SIZE, 0x10000000, 0x20000000, TOP - PAGE))
        memsz = rng.choice((PAGE, BLOCK, 1 << 40, TOP - 1 - paddr, TOP - paddr))
        kind, offset, filesz, crc = rng.choice((ZERO, FREE, DATA)), 0, 0, 0
        if kind == DATA:  # a page of its own, stored raw after the others
            stored = rng.randbytes(PAGE)
            memsz, offset, filesz, crc = PAGE, len(parts.head), 4 + PAGE, zlib.crc32(stored)
            parts.head += struct.pack("<I", RAW | PAGE) + stored
        segment(len(phdrs), paddr, memsz, kind, offset, filesz, crc)(parts)
    elif how == "note":
        j = rng.randrange(len(notes))
        if rng.random() < 0.5:
            notes.insert(j, notes[j])
        else:
            del notes[j]
    elif how == "lie":
        j = rng.randrange(len(notes) + 1)
        parts.lies[j] = extreme(rng, len(notes[j - 1][2]) if j else 24 * len(records), 4, size)
    elif how == "note_filesz":
        parts.note_filesz = extreme(rng, 0, 8, size)
    return f"{how} at segment {i}"


@dataclass
class World:
    """The sanitized core, the seeds, and the files the runs share."""

    core: Path
    tmp: Path
    memory: bytes
    seeds: list[Seed]
    key: Path
    canary: Path
    running: Path

    def run(self, image: bytes, key: Path | None, mode: str,
            leaks: bool = True) -> subprocess.CompletedProcess[str]:
        """khib-restore on ``image``: into the canary (mode "mem"), --check or --export;
        checked for sanitizer reports (LeakSanitizer's with ``leaks``: 10 ms a run) and
        crashes."""
        (self.tmp / "image").write_bytes(image)
        args = {"mem": ("--mem", self.canary, "--running", self.running),
                "check": ("--check",), "export": ("--export", self.tmp / "export")}[mode]
        result = subprocess.run([self.core / "khib-restore", self.tmp / "image", *args,
                                 *(("--key", key) if key else ())], capture_output=True,
                                text=True, env=sanitized(leaks), timeout=120, check=False)
        assert result.returncode >= 0 and not any(r in result.stderr for r in REPORTS), (
            f"{self.tmp / 'image'}: {result.returncode}\n{result.stderr}")
        return result

    def memory_after(self) -> bytes:
        """What a run left in the canary, which is then put back as it was."""
        found = self.canary.read_bytes()
        if found != CANARY:
            self.canary.write_bytes(CANARY)
        return found


@pytest.fixture(scope="module")
def world(sanitized_core: Path, tmp_path_factory: pytest.TempPathFactory) -> World:
    """Keyed and unkeyed seeds, with meta, layout pairs and VMCOREINFO, saved from a memory
    file by the sanitized khib-save (itself checked); a canary the size of that memory."""
    tmp = tmp_path_factory.mktemp("fuzz")
    mem = fuzz_memory(tmp / "mem")
    (tmp / "ranges").write_text(f"00000000-{SIZE - 1:08x}\n")
    (tmp / "running").write_text(RUNNING)
    (tmp / "meta").write_text('{"entry": "0x1bf0fb", "nonce": "00112233"}')
    (tmp / "key").write_bytes(bytes(range(32)))
    (tmp / "canary").write_bytes(CANARY)
    world = World(sanitized_core, tmp, mem, [], tmp / "key", tmp / "canary", tmp / "running")
    for key in (None, tmp / "key"):
        save = subprocess.run(
            [sanitized_core / "khib-save", "--mem", tmp / "mem", "--ranges", tmp / "ranges",
             "-o", tmp / "seed", "--meta", tmp / "meta", "--vmcoreinfo", "0x5000:0x100",
             "--control-page", "0x6000", *(("--key", key) if key else ())],
            capture_output=True, text=True, env=sanitized(True), check=False)
        assert save.returncode == 0 and not any(r in save.stderr for r in REPORTS), save.stderr
        image = (tmp / "seed").read_bytes()
        assert world.run(image, key, "export").returncode == 0
        world.seeds.append(Seed(image, key, sealed_bytes(image, key is not None),
                                fields_of(image), parts_of(image),
                                (tmp / "export").read_bytes()[64:]))
    return world


def test_the_seeds_have_every_part_and_rebuild_exactly(world: World) -> None:
    """Each seed has two-block LZ4 segments, zero runs, window pairs and VMCOREINFO; taken
    apart and assembled again (sealed with its key), it is the same bytes."""
    for seed in world.seeds:
        places = note_places(seed.image)
        assert {META, LAYOUT, "VMCOREINFO"} <= places.keys()
        assert struct.unpack_from("<Q", seed.image, places[LAYOUT][0] + 32) == (2,)
        stored = [blocks(seed.image, load) for load in loads_of(seed.image) if load.filesz]
        assert any(len(found) == 2 and not found[0][2] for found in stored)  # LZ4
        assert len(stored) < len(loads_of(seed.image))  # zero runs too
        key = seed.key.read_bytes() if seed.key else None
        assert assemble(copy.deepcopy(seed.parts), key) == seed.image


def test_mutated_images_are_refused_untouched_or_restored_exactly(world: World) -> None:
    """The fixed-seed stream of mutations, as sealed: refused (exit 1, the canary as it
    was) unless the change missed the sealed bytes; accepted, memory (and an export) as
    the original image gives it."""
    rng = random.Random(SEED)
    tally: Counter[str] = Counter()
    for run in range(AS_SEALED_RUNS):
        seed = rng.choice(world.seeds)
        image, changed, how = mutate(rng, seed)
        mode = rng.choices(("mem", "check", "export"), weights=(55, 25, 20))[0]
        key = seed.key if rng.random() > 0.03 else (None if seed.key else world.key)
        result = world.run(image, key, mode, leaks=run % 10 == 0)
        label = f"run {run} ({how}, {mode}): {result.stderr}"
        after = world.memory_after() if mode == "mem" else None
        if result.returncode == 0:
            assert key == seed.key and not any(seed.sealed[at] for at in changed), label
            assert after in (None, world.memory), label
            if mode == "export":
                assert (world.tmp / "export").read_bytes()[64:] == seed.export, label
        else:
            assert result.returncode == 1 and after in (None, CANARY), label
        tally[f"{mode} {'accepted' if result.returncode == 0 else 'refused'}"] += 1
    print(dict(tally))
    assert tally["mem accepted"] and tally["mem refused"] > AS_SEALED_RUNS // 3


def test_resealed_changes_never_write_when_refused(world: World) -> None:
    """Changes to an image's structure, sealed again with the key: however its segments and
    notes lie, exit 1 leaves the canary as it was (and only 0, 1 or 3 are said)."""
    rng = random.Random(SEED + 1)
    tally: Counter[int] = Counter()
    for run in range(RESEALED_RUNS):
        seed = rng.choice(world.seeds)
        parts = copy.deepcopy(seed.parts)
        how = reshape(rng, parts, len(seed.image))
        image = assemble(parts, seed.key.read_bytes() if seed.key else None)
        mode = rng.choice(("mem", "mem", "check"))
        result = world.run(image, seed.key, mode, leaks=run % 10 == 0)
        after = world.memory_after()
        assert result.returncode in (0, 1, 3), f"run {run} ({how}): {result.stderr}"
        assert result.returncode != 1 or after == CANARY, f"run {run} ({how}): {result.stderr}"
        tally[result.returncode] += 1
    print(dict(tally))
    assert tally[1] > RESEALED_RUNS // 3 and tally[0]


def lie(index: int, descsz: int) -> Callable[[Parts], None]:
    return lambda parts: parts.lies.update({index: descsz})


def segment(index: int, paddr: int, memsz: int, kind: int = ZERO, offset: int = 0,
            filesz: int = 0, crc: int = 0) -> Callable[[Parts], None]:
    """A memory header and its record, put in at ``index``."""
    def change(parts: Parts) -> None:
        parts.phdrs.insert(index, [PT_MEMORY, offset, paddr, filesz, memsz])
        parts.records.insert(index, [paddr, memsz, crc, kind])
    return change


def swapped(parts: Parts) -> None:
    parts.phdrs[:2], parts.records[:2] = parts.phdrs[1::-1], parts.records[1::-1]


def set_at(index: int, **values: int) -> Callable[[Parts], None]:
    """Fields of a memory header (type, offset, paddr, filesz, memsz) and of its record
    (paddr and memsz follow the header's; crc32, kind)."""
    def change(parts: Parts) -> None:
        phdr, record = parts.phdrs[index], parts.records[index]
        for name, value in values.items():
            if name in ("type", "offset", "paddr", "filesz", "memsz"):
                phdr[("type", "offset", "paddr", "filesz", "memsz").index(name)] = value
            if name in ("paddr", "memsz", "crc32", "kind"):
                record[("paddr", "memsz", "crc32", "kind").index(name)] = value
    return change


def shared(parts: Parts) -> None:
    """The first data segment after a zero one claims the stored bytes of the data
    segment before that zero one."""
    kinds = [record[3] for record in parts.records]
    later = next(i for i in range(2, len(kinds))
                 if kinds[i - 2:i + 1] == [DATA, ZERO, DATA])
    earlier = parts.phdrs[later - 2]
    set_at(later, offset=earlier[1], filesz=earlier[3], memsz=earlier[4],
           crc32=parts.records[later - 2][2])(parts)


def with_note(owner: bytes, kind: int, desc: bytes) -> Callable[[Parts], None]:
    return lambda parts: parts.notes.append((owner, kind, desc))


def repeated(index: int) -> Callable[[Parts], None]:
    return lambda parts: parts.notes.append(parts.notes[index])


def note_filesz(size: int, lies: dict[int, int]) -> Callable[[Parts], None]:
    def change(parts: Parts) -> None:
        parts.note_filesz = size
        parts.lies.update(lies)
    return change


def pairs_miscounted(parts: Parts) -> None:
    index = next(i for i, note in enumerate(parts.notes) if note[1] == LAYOUT)
    owner, kind, desc = parts.notes[index]
    parts.notes[index] = (owner, kind, desc[:32] + struct.pack("<Q", 3) + desc[40:])


OUT_OF_PLACE = "does not match its record, or is out of place"
MALFORMED = "not a khib image: its notes are malformed"
RUNNING_RAM = "overlaps this kernel's own RAM"  # only where it writes
CRAFTED: dict[str, tuple[Callable[[Parts], None], str]] = {
    "a 4 GiB PT_NOTE whose first note's n_descsz is 0xffffffff": (
        note_filesz((1 << 32) + 100, {0: 0xFFFFFFFF}), "its notes are out of place"),
    "the records' n_descsz 0xffffffff": (lie(0, 0xFFFFFFFF), MALFORMED),
    "VMCOREINFO's n_descsz 0xffffffff": (lie(3, 0xFFFFFFFF), MALFORMED),
    "the meta's n_descsz past the PT_NOTE": (lie(1, 60000), MALFORMED),
    "a zero segment whose paddr + memsz wraps": (segment(99, TOP - PAGE, 2 * PAGE),
                                                OUT_OF_PLACE),
    "a free segment ending at 2^64": (segment(99, TOP - PAGE, PAGE, FREE), OUT_OF_PLACE),
    "a data segment whose paddr + memsz wraps": (set_at(0, paddr=TOP - PAGE), OUT_OF_PLACE),
    "segments unsorted": (swapped, OUT_OF_PLACE),
    "segments overlapping": (set_at(1, paddr=PAGE), OUT_OF_PLACE),
    "a segment repeated": (lambda parts: segment(1, *parts.records[0][:2], DATA,
                                                 *parts.phdrs[0][1:4:2],
                                                 parts.records[0][2])(parts), OUT_OF_PLACE),
    "a huge zero segment over the running kernel": (segment(99, 0x10000000, 1 << 62),
                                                     RUNNING_RAM),
    "stored bytes past the end": (set_at(0, offset=8 * MiB), OUT_OF_PLACE),
    "stored bytes running into the headers": (set_at(0, filesz=4 * MiB), OUT_OF_PLACE),
    "stored bytes in the first page": (set_at(0, offset=64), OUT_OF_PLACE),
    "stored bytes of an earlier segment, past a zero one": (shared, OUT_OF_PLACE),
    "a data header with a zero record": (set_at(0, kind=ZERO), OUT_OF_PLACE),
    "a zero record with a checksum": (segment(99, 2 * MiB, PAGE, crc=1), OUT_OF_PLACE),
    "a record of kind 3": (segment(99, 2 * MiB, PAGE, kind=3), OUT_OF_PLACE),
    "an empty segment": (segment(99, 2 * MiB, 0), OUT_OF_PLACE),
    "a PT_LOAD among the memory headers": (set_at(0, type=1), OUT_OF_PLACE),
    "a record without its header": (lambda parts: parts.records.append([2 * MiB, PAGE, 0, 1]),
                                    " records\n"),
    "a header without its record": (lambda parts: parts.phdrs.append(
        [PT_MEMORY, 0, 2 * MiB, 0, PAGE]), OUT_OF_PLACE),
    "a second PT_NOTE": (lambda parts: parts.phdrs.append([4, 0, 0, 0, 0]),
                         "its notes are out of place"),
    "the meta twice": (repeated(0), MALFORMED),
    "the layout twice": (repeated(1), MALFORMED),
    "VMCOREINFO twice": (repeated(2), MALFORMED),
    "a second seal": (with_note(KHIB, SEAL, bytes(80)), MALFORMED),
    "a second records note": (with_note(KHIB, SEGMENTS, b""), MALFORMED),
    "a note of an unknown type": (with_note(KHIB, 0x4B480009, b""), MALFORMED),
    "a note of another owner": (with_note(b"CORE\0", 1, b"x"), MALFORMED),
    "an owner of 13 bytes": (with_note(b"KHIBKHIBKHIB\0", META, b""), MALFORMED),
    "the layout's npairs miscounted": (pairs_miscounted, MALFORMED),
    "a meta of 64 KiB and a byte": (lambda parts: parts.notes.__setitem__(
        0, (KHIB, META, b"x" * (65 << 10))), MALFORMED),
}


@pytest.mark.parametrize("name", CRAFTED)
def test_crafted_images_are_refused_before_any_write(world: World, name: str) -> None:
    """Each crafted structure, sealed with the key as khib-save would seal it, is refused
    where it is read (the message says why), exit 1, the canary as it was."""
    change, message = CRAFTED[name]
    for seed in world.seeds:
        parts = copy.deepcopy(seed.parts)
        change(parts)
        image = assemble(parts, seed.key.read_bytes() if seed.key else None)
        for mode in ("mem",) if message == RUNNING_RAM else ("mem", "check"):
            result = world.run(image, seed.key, mode)
            assert result.returncode == 1 and message in result.stderr, result.stderr
            assert world.memory_after() == CANARY


def test_the_corpus_is_refused_cleanly(world: World) -> None:
    """The inputs that once crashed khib-restore or made a sanitizer report, each kept in
    tests/fuzz-corpus: refused, exit 1, the canary as it was."""
    for path in sorted(CORPUS.iterdir()):
        for mode in ("mem", "check", "export"):
            result = world.run(path.read_bytes(), None, mode)
            assert result.returncode == 1 and world.memory_after() == CANARY, (path,
                                                                               result.stderr)
