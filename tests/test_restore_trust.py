"""What khib-restore trusts, and when: a disk that answers the writing pass's reads with
other bytes than the check's (an LD_PRELOAD shim on pread), or with EIO; --within;
--meta-out; ranges that reach the top of the address space. The exit status says
whether memory changed: 1 nothing written, 3 writing began."""

from __future__ import annotations

import os
import subprocess
import zlib
from pathlib import Path

import pytest

from tests.helpers import META, SEAL, MiB, blocks, loads, memory, note_places, notes

CANARY = b"\xee" * MiB
TOKEN = b"ATTACKER-BYTES!!"
CHANGED = "changed on the disk since it was checked"

# pread on the image: the first read that touches bytes KHIB_SHIM_FROM..KHIB_SHIM_TO as
# the file has them; every later one from the file KHIB_SHIM_EVIL, or EIO without it.
SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static int reads;

static long long number(const char *name)
{
    const char *value = getenv(name);
    return value ? atoll(value) : 0;
}

ssize_t pread64(int fd, void *buffer, size_t size, off64_t offset)
{
    static ssize_t (*real)(int, void *, size_t, off64_t);
    const char *image = getenv("KHIB_SHIM_IMAGE"), *evil = getenv("KHIB_SHIM_EVIL");
    struct stat ours, theirs;
    ssize_t got;
    int other;

    if (!real)
        real = (ssize_t (*)(int, void *, size_t, off64_t))dlsym(RTLD_NEXT, "pread64");
    if (!image || fstat(fd, &theirs) < 0 || stat(image, &ours) < 0 ||
        theirs.st_ino != ours.st_ino || theirs.st_dev != ours.st_dev ||
        offset >= number("KHIB_SHIM_TO") ||
        offset + (off64_t)size <= number("KHIB_SHIM_FROM") || ++reads == 1)
        return real(fd, buffer, size, offset);
    if (!evil) {
        errno = EIO;
        return -1;
    }
    other = open(evil, O_RDONLY);
    got = real(other, buffer, size, offset);
    close(other);
    return got;
}

ssize_t pread(int fd, void *buffer, size_t size, off_t offset)
{
    return pread64(fd, buffer, size, offset);
}
"""


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("shim")
    (folder / "shim.c").write_text(SHIM)
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", folder / "shim.so",
                    folder / "shim.c", "-ldl"], check=True)
    return folder / "shim.so"


def restore(core: Path, *args: object, env: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([core / "khib-restore", *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, check=False)


def saved(core: Path, tmp_path: Path, *extra: object) -> bytes:
    """A MiB of helpers.memory saved to tmp_path/image; the canary tmp_path/target; the
    memory's bytes."""
    mem = memory(tmp_path / "mem", MiB)
    (tmp_path / "ranges").write_text(f"00000000-{MiB - 1:08x}\n")
    result = subprocess.run([core / "khib-save", "--mem", tmp_path / "mem", "--ranges",
                             tmp_path / "ranges", "-o", tmp_path / "image", *extra],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    (tmp_path / "target").write_bytes(CANARY)
    return mem


def forged(block: bytes, token: bytes) -> bytes:
    """``block`` beginning with ``token``, the four bytes after it chosen so that the
    CRC-32 stays the same: a change a CRC-32 cannot see (CRC-32 is linear over GF(2):
    crc(a ^ b) = crc(a) ^ crc(b) ^ crc(zeros))."""
    data = bytearray(block)
    data[:len(token) + 4] = token + bytes(4)
    zeros = zlib.crc32(bytes(len(data)))
    basis: list[tuple[int, int]] = []  # (the CRC-32 change, the bits that make it)
    for bit in range(32):
        flip = bytearray(len(data))
        flip[len(token) + bit // 8] = 1 << bit % 8
        vector, made = zlib.crc32(flip) ^ zeros, 1 << bit
        for have, have_made in basis:
            if vector ^ have < vector:
                vector, made = vector ^ have, made ^ have_made
        basis = sorted([*basis, (vector, made)], reverse=True)
    want, bits = zlib.crc32(data) ^ zlib.crc32(block), 0
    for have, have_made in basis:
        if want ^ have < want:
            want, bits = want ^ have, bits ^ have_made
    assert want == 0
    data[len(token):len(token) + 4] = bits.to_bytes(4, "little")
    assert zlib.crc32(data) == zlib.crc32(block) and data != block
    return bytes(data)


def attack(tmp_path: Path, segment: int, evil: bool = True) -> dict[str, str]:
    """The shim's settings: the first block of the ``segment``-th data segment answers
    the second read with a forged copy of itself (``evil``), or with EIO."""
    image = tmp_path / "image"
    data = image.read_bytes()
    load = [load for load in loads(image)[0] if load.filesz][segment]
    at, length, raw = blocks(data, load)[0]
    assert raw  # random pages: stored as they are
    settings = {"KHIB_SHIM_IMAGE": str(image), "KHIB_SHIM_FROM": str(at),
                "KHIB_SHIM_TO": str(at + length)}
    if evil:
        changed = data[:at] + forged(data[at:at + length], TOKEN) + data[at + length:]
        (tmp_path / "evil").write_bytes(changed)
        settings["KHIB_SHIM_EVIL"] = str(tmp_path / "evil")
    return settings


def untouched_or_restored(target: bytes, mem: bytes) -> bool:
    """Whether every byte is the canary's or the memory's own at that address."""
    return all(byte in (0xEE, want) for byte, want in zip(target, mem, strict=True))


def test_a_block_changed_after_the_check_is_never_written(plain_core: Path, shim: Path,
                                                          tmp_path: Path) -> None:
    """The last data segment's block reads back other bytes with the same CRC-32 (the
    segment's checksum and the verify pass cannot see it): the digest the check kept does.
    Writing had begun: exit 3, not one attacker byte in memory; an export refuses too."""
    mem = saved(plain_core, tmp_path)
    env = {"LD_PRELOAD": str(shim), **attack(tmp_path, -1)}
    result = restore(plain_core, tmp_path / "image", "--mem", tmp_path / "target", env=env)
    assert result.returncode == 3 and CHANGED in result.stderr, result.stderr
    target = (tmp_path / "target").read_bytes()
    assert target != CANARY and untouched_or_restored(target, mem)
    assert TOKEN not in target
    export = restore(plain_core, tmp_path / "image", "--export", tmp_path / "core", env=env)
    assert export.returncode == 1 and CHANGED in export.stderr
    assert TOKEN not in (tmp_path / "core").read_bytes()


@pytest.mark.parametrize("evil", [True, False], ids=["changed", "eio"])
def test_a_first_block_unreadable_as_checked_leaves_memory_untouched(
        plain_core: Path, shim: Path, tmp_path: Path, evil: bool) -> None:
    """The first data segment (at paddr 0, written first) answers its second read with
    other bytes, or EIO: nothing was written yet, exit 1, the canary as it was."""
    saved(plain_core, tmp_path)
    assert loads(tmp_path / "image")[0][0].filesz  # the first segment holds data
    env = {"LD_PRELOAD": str(shim), **attack(tmp_path, 0, evil)}
    result = restore(plain_core, tmp_path / "image", "--mem", tmp_path / "target", env=env)
    assert result.returncode == 1 and "nothing written" in result.stderr, result.stderr
    assert (CHANGED if evil else "is damaged or cut short") in result.stderr
    assert (tmp_path / "target").read_bytes() == CANARY


def test_an_eio_after_writing_began_says_memory_changed(plain_core: Path, shim: Path,
                                                        tmp_path: Path) -> None:
    """EIO on the last data segment's second read: exit 3, what was written is the
    image's own memory."""
    mem = saved(plain_core, tmp_path)
    env = {"LD_PRELOAD": str(shim), **attack(tmp_path, -1, evil=False)}
    result = restore(plain_core, tmp_path / "image", "--mem", tmp_path / "target", env=env)
    assert result.returncode == 3 and "Input/output error" in result.stderr, result.stderr
    target = (tmp_path / "target").read_bytes()
    assert target != CANARY and untouched_or_restored(target, mem)


def test_within_refuses_a_segment_outside_the_ram_it_lists(core: Path, tmp_path: Path) -> None:
    """--within: every segment in the RAM it lists, or nothing is written; a range up to
    the top of the address space holds them all."""
    mem = saved(core, tmp_path)
    (tmp_path / "within").write_text("00000000-000fefff\n")  # less the last page
    result = restore(core, tmp_path / "image", "--mem", tmp_path / "target",
                     "--within", tmp_path / "within")
    assert result.returncode == 1, result.stderr
    assert "lies outside the RAM the image was saved from" in result.stderr
    assert (tmp_path / "target").read_bytes() == CANARY
    (tmp_path / "within").write_text("00000000-ffffffffffffffff\n")
    result = restore(core, tmp_path / "image", "--mem", tmp_path / "target",
                     "--within", tmp_path / "within")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "target").read_bytes() == mem


def test_running_ram_up_to_the_top_of_the_address_space_is_off_limits(core: Path,
                                                                      tmp_path: Path) -> None:
    """A System RAM range that ends at 0xffffffffffffffff (its size would wrap to 0) still
    keeps the image out of the running kernel's RAM."""
    saved(core, tmp_path)
    (tmp_path / "iomem").write_text("000f0000-ffffffffffffffff : System RAM\n")
    result = restore(core, tmp_path / "image", "--mem", tmp_path / "target",
                     "--running", tmp_path / "iomem")
    assert result.returncode == 1 and "overlaps this kernel's own RAM" in result.stderr
    assert (tmp_path / "target").read_bytes() == CANARY


def test_check_meta_out_writes_the_meta_note_as_given(core: Path, tmp_path: Path) -> None:
    """--check --meta-out: the bytes khib-save --meta recorded, exactly (an odd length,
    UTF-8, a newline); nothing when the check fails."""
    meta = '{"entry": "0x1bf0fb", "nonce": "0a1b", "host": "café"}\n'.encode()
    (tmp_path / "meta.json").write_bytes(meta)
    saved(core, tmp_path, "--meta", tmp_path / "meta.json")
    assert notes((tmp_path / "image").read_bytes())[META] == meta
    result = restore(core, tmp_path / "image", "--check", "--meta-out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out").read_bytes() == meta
    data = bytearray((tmp_path / "image").read_bytes())
    data[note_places(data)[SEAL][0] + 16] ^= 1  # the seal's SHA-256
    (tmp_path / "image").write_bytes(data)
    result = restore(core, tmp_path / "image", "--check", "--meta-out", tmp_path / "refused")
    assert result.returncode == 1 and not (tmp_path / "refused").exists()


def checked_digests(core: Path, tmp_path: Path, *key: object) -> Path:
    """The digests a check of tmp_path/image kept (--check --digests-out), as the first
    stage of a resume hands them to the restore stage."""
    result = restore(core, tmp_path / "image", "--check", *key,
                     "--digests-out", tmp_path / "digests")
    assert result.returncode == 0, result.stderr
    return tmp_path / "digests"


def test_digests_from_a_check_stand_in_for_reading_the_image_twice(core: Path,
                                                                  tmp_path: Path) -> None:
    """--digests: one SHA-256 per stored block, as the check found them; the restore
    writes with them, reading the image once, and the memory comes back whole."""
    mem = saved(core, tmp_path)
    digests = checked_digests(core, tmp_path)
    data = (tmp_path / "image").read_bytes()
    assert digests.stat().st_size == 32 * sum(len(blocks(data, load))
                                              for load in loads(data)[0] if load.filesz)
    assert digests.stat().st_mode & 0o777 == 0o600
    result = restore(core, tmp_path / "image", "--mem", tmp_path / "target",
                     "--digests", digests)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "target").read_bytes() == mem


def test_digests_that_are_missing_are_refused(core: Path, tmp_path: Path) -> None:
    """No list where --digests names one: refused with the reason, nothing written."""
    saved(core, tmp_path)
    result = restore(core, tmp_path / "image", "--mem", tmp_path / "target",
                     "--digests", tmp_path / "none")
    assert result.returncode == 1 and "No such file or directory" in result.stderr
    assert "the digests of its check" in result.stderr
    assert (tmp_path / "target").read_bytes() == CANARY


@pytest.mark.parametrize("change", ["flipped", "short", "long"])
def test_digests_that_do_not_give_the_seal_are_refused(core: Path, tmp_path: Path,
                                                       change: str) -> None:
    """A list other than the sealed one (a digest changed, one missing, one too many) is
    refused before anything is written: exit 1, the canary as it was."""
    saved(core, tmp_path)
    digests = checked_digests(core, tmp_path)
    data = bytearray(digests.read_bytes())
    if change == "flipped":
        data[40] ^= 1
    digests.write_bytes(data[:-32] if change == "short" else
                        data + bytes(32) if change == "long" else data)
    result = restore(core, tmp_path / "image", "--mem", tmp_path / "target",
                     "--digests", digests)
    assert result.returncode == 1 and "nothing written" in result.stderr, result.stderr
    assert ("does not match its SHA-256 seal" if change == "flipped" else
            "does not hold one digest for each") in result.stderr
    assert (tmp_path / "target").read_bytes() == CANARY


def test_digests_need_the_key_of_a_keyed_image(core: Path, tmp_path: Path) -> None:
    """A keyed image's digests are taken only with its key, and checked against its
    HMAC: another key is refused before any write."""
    (tmp_path / "key").write_bytes(b"k" * 64)
    (tmp_path / "other").write_bytes(b"o" * 64)
    mem = saved(core, tmp_path, "--key", tmp_path / "key")
    digests = checked_digests(core, tmp_path, "--key", tmp_path / "key")
    for key, message in (((), "it needs its key"),
                         (("--key", tmp_path / "other"), "fails its HMAC")):
        result = restore(core, tmp_path / "image", "--mem", tmp_path / "target",
                         "--digests", digests, *key)
        assert result.returncode == 1 and message in result.stderr, result.stderr
        assert (tmp_path / "target").read_bytes() == CANARY
    result = restore(core, tmp_path / "image", "--mem", tmp_path / "target",
                     "--digests", digests, "--key", tmp_path / "key")
    assert result.returncode == 0 and (tmp_path / "target").read_bytes() == mem


@pytest.mark.parametrize("segment", [0, -1], ids=["first", "last"])
def test_a_block_changed_after_the_first_stages_check_is_never_written(
        core: Path, tmp_path: Path, segment: int) -> None:
    """The image changes on the disk between the check that kept the digests and the
    restore that takes them (a block forged to keep its CRC-32): the block's digest
    catches it before a byte of it is written. The first segment: nothing written yet,
    exit 1; the last: exit 3, and none of the forged bytes in memory."""
    mem = saved(core, tmp_path)
    digests = checked_digests(core, tmp_path)
    data = (tmp_path / "image").read_bytes()
    at, length, _ = blocks(data, [load for load in loads(data)[0] if load.filesz][segment])[0]
    (tmp_path / "image").write_bytes(data[:at] + forged(data[at:at + length], TOKEN)
                                     + data[at + length:])
    result = restore(core, tmp_path / "image", "--mem", tmp_path / "target",
                     "--digests", digests)
    assert CHANGED in result.stderr, result.stderr
    target = (tmp_path / "target").read_bytes()
    if segment == 0:
        assert result.returncode == 1 and target == CANARY
    else:
        assert result.returncode == 3 and untouched_or_restored(target, mem)
    assert TOKEN not in target


def test_data_runs_are_written_before_the_zero_runs_that_precede_them(
        plain_core: Path, shim: Path, tmp_path: Path) -> None:
    """The data runs go into memory first, then the zero and free runs (each window read,
    written with zeros only where it does not read so, read again): memory whose first
    run is zeros, and whose first data block answers its second read with EIO, is left
    untouched (exit 1); without the shim the canary's zero runs become zeros and the
    whole memory is verified."""
    mem = bytes(256 << 10) + memory(tmp_path / "rest", MiB - (256 << 10))
    (tmp_path / "mem").write_bytes(mem)
    (tmp_path / "ranges").write_text(f"00000000-{MiB - 1:08x}\n")
    result = subprocess.run([plain_core / "khib-save", "--mem", tmp_path / "mem", "--ranges",
                             tmp_path / "ranges", "-o", tmp_path / "image"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert not loads(tmp_path / "image")[0][0].filesz  # the first run: zeros
    (tmp_path / "target").write_bytes(CANARY)
    env = {"LD_PRELOAD": str(shim), **attack(tmp_path, 0, evil=False)}
    result = restore(plain_core, tmp_path / "image", "--mem", tmp_path / "target", env=env)
    assert result.returncode == 1 and "nothing written" in result.stderr, result.stderr
    assert (tmp_path / "target").read_bytes() == CANARY
    result = restore(plain_core, tmp_path / "image", "--mem", tmp_path / "target")
    assert result.returncode == 0 and (tmp_path / "target").read_bytes() == mem
