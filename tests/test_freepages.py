"""A's free pages are recorded, not stored, and they really are free: on the kernels
khib-build built (x86_64 and i386), QEMU TCG, 512 MiB.

A dirties 160 MiB of memory (copies of its random file) and frees it, then jumps.
B saves A twice, once leaving A's free pages out (as A's VMCOREINFO locates them) and
once keeping them; overwrites every page the first image recorded as free with random
bytes, restores that image and jumps back. A's data, 200 MiB allocated, filled and read
back, and its kernel log show nothing was lost. On x86_64, Debian's makedumpfile reads
the image exported as a plain core and counts the same free pages."""

from __future__ import annotations

import re
import secrets
import subprocess
from pathlib import Path

import pytest

from tests.guest import (
    CPUS,
    MEMORY,
    Target,
    a_initrd,
    a_script,
    assert_a_intact,
    disk,
    target_for,
)
from tests.helpers import FREE, khib, loads

pytestmark = pytest.mark.slow

A_BODY = """
cat /tmp/blob /tmp/blob > /tmp/dirty; dd if=/tmp/blob bs=1M count=32 2>/dev/null >> /tmp/dirty
rm /tmp/dirty; sync; echo 3 > /proc/sys/vm/drop_caches
jump --b-run /boot/b.sh; echo "A-JUMP free result=$?"; check free
python3 -c "
blocks = [bytes([k]) * (1 << 20) for k in range(1, 201)]
print('A-ALLOC', sum(b.count(k) == len(b) for k, b in enumerate(blocks, 1)))
"
echo "A-END complaints=$(dmesg | grep -c -E 'BUG|Oops|WARNING|corrupt')"
"""
B_SCRIPT = """#!/bin/sh
khib save /dev/vda; echo "B-SAVE free $?"
khib save /dev/vdb --keep-free-pages; echo "B-SAVE all $?"
python3 /boot/scribble.py /dev/vda
khib restore /dev/vda; echo "B-RESTORE $?"
"""
# In B: random bytes over every page the image recorded as free, in A's memory.
SCRIBBLE_PY = """import mmap, os, sys
from khib_tools.image import read_image
mem = os.open("/dev/mem", os.O_RDWR | os.O_SYNC)
noise, pages = os.urandom(1 << 20), 0
for s in read_image(sys.argv[1]).segments:
    at = s.paddr
    while s.kind == "free" and at < s.paddr + s.memsz:
        length = min(1 << 20, s.paddr + s.memsz - at)
        view = mmap.mmap(mem, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE,
                         offset=at)
        view[:] = noise[:length]
        view.close()
        at += length
        pages += length >> 12
print("B-SCRIBBLED", pages)
"""


@pytest.fixture(params=["x86_64", "i386"])
def target(request: pytest.FixtureRequest) -> Target:
    return target_for(request)


def stored(image: Path) -> int:
    return sum(load.filesz for load in loads(image)[0])


def makedumpfile_free_pages(core_file: Path, tmp_path: Path) -> int:
    """The free pages makedumpfile -d 16 excludes from a core."""
    result = subprocess.run(["makedumpfile", "-d", "16", "--dry-run", "--show-stats",
                             core_file, tmp_path / "dump"], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.search(r"Free pages\s*: 0x([0-9a-f]+)", result.stdout + result.stderr)
    assert found, result.stdout + result.stderr
    return int(found[1], 16)


def test_free_pages_are_recorded_not_stored(target: Target, core: Path, tmp_path: Path) -> None:
    token = f"tok-{secrets.token_hex(12)}"
    initrd = a_initrd(target, tmp_path, a_script(token, A_BODY),
                      {"boot/b.sh": B_SCRIPT.encode(), "boot/scribble.py": SCRIBBLE_PY.encode()})
    vda, vdb = disk(tmp_path / "vda.img", 512), disk(tmp_path / "vdb.img", 512)
    result = khib("boot", "-c", target.config, "--kernel", target.kernel, "--image", initrd,
                  "--memory", MEMORY, "--cpus", CPUS, "--disk", vda, "--disk", vdb,
                  "--run", "/boot/a.sh", "--expect", "A-END", "--timeout", 900)
    console = result.stdout
    tail = console[-8000:]
    assert result.returncode == 0, tail + result.stderr
    assert "B-SAVE free 0" in console and "B-SAVE all 0" in console, tail
    assert "B-RESTORE 0" in console and "A-JUMP free result=0" in console, tail

    # What khib-save recorded as free is what A counted just before the jump.
    counted = int(re.search(r"A has (\d+) free pages, NR_FREE_PAGES", console)[1])
    recorded = int(re.search(r"/dev/vda: .* and (\d+) free pages recorded", console)[1])
    assert abs(recorded - counted) <= counted * 0.02, (recorded, counted)
    segments, records = loads(vda)
    assert sum(memsz for _, memsz, _, kind in records if kind == FREE) >> 12 == recorded
    pages = sum(s.memsz for s in segments) >> 12
    assert stored(vda) <= (pages - recorded) << 12
    assert stored(vdb) >= stored(vda) + (50 << 20), (stored(vdb), stored(vda))

    # The pages left out were free: scribbled over, restored as zeros, and A is whole.
    assert f"B-SCRIBBLED {recorded}" in console, tail
    assert_a_intact(console, ["free"])
    assert "A-ALLOC 200" in console, tail
    assert "A-END complaints=0" in console, tail

    if target.arch == "x86_64":  # makedumpfile reads the exported core, and agrees
        exported = subprocess.run([core / "khib-restore", vda, "--export", tmp_path / "core"],
                                  capture_output=True, text=True, check=False)
        assert exported.returncode == 0, exported.stderr
        assert abs(makedumpfile_free_pages(tmp_path / "core", tmp_path) - recorded) <= \
            recorded * 0.01
