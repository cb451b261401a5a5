"""A's free pages are recorded, not stored, and they really are free: on the kernels
khib-build built (x86_64 and i386), QEMU TCG, 512 MiB, read from the jump scenario's run
(tests/jumps.py).

After its first jump A dirties 160 MiB of memory (copies of its random file), frees it
and jumps again. B saves A twice, once leaving A's free pages out (as A's VMCOREINFO locates
them) and once keeping them; overwrites every page the first image covers, the free ones
included, restores that image and jumps back. A's data, 200 MiB allocated, filled and
read back, and its kernel log show nothing was lost. On x86_64, Debian's makedumpfile
reads the image exported as a plain core and counts the same free pages."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.guest import Target, assert_a_intact, target_for
from tests.helpers import FREE, loads
from tests.jumps import JumpRun

pytestmark = pytest.mark.slow


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


def test_free_pages_are_recorded_not_stored(target: Target, jump_run: JumpRun, core: Path,
                                           tmp_path: Path) -> None:
    console = jump_run.console
    tail = console[-8000:]
    assert jump_run.returncode == 0, tail + jump_run.stderr
    assert "B-SAVE all 0" in console and "A-JUMP save result=0" in console, tail
    assert "segments written and verified" in console, tail

    # What khib-save recorded as free is what A counted just before the save jump.
    before_save = console[console.index("A-JUMP fail"):console.index("B-MARKER")]
    counted = int(re.search(r"A has (\d+) free pages, NR_FREE_PAGES", before_save)[1])
    recorded = int(re.search(r"/dev/vda: .* and (\d+) free pages recorded", console)[1])
    assert abs(recorded - counted) <= counted * 0.02, (recorded, counted)
    vda, kept = jump_run.disk("vda"), jump_run.disk("vdc")
    segments, records = loads(vda)
    assert sum(memsz for _, memsz, _, kind in records if kind == FREE) >> 12 == recorded
    pages = sum(s.memsz for s in segments) >> 12
    assert stored(vda) <= (pages - recorded) << 12
    assert stored(kept) >= stored(vda) + (50 << 20), (stored(kept), stored(vda))

    # The pages left out were free: overwritten with the rest, restored as zeros, and A
    # is whole.
    damaged = re.search(r"B damaged (\d+) MiB", console)
    assert damaged and int(damaged[1]) == pages >> 8, tail
    assert_a_intact(console, ["save"])
    assert "A-ALLOC 200" in console, tail
    assert "A-END complaints=0" in console, tail

    if target.arch == "x86_64":  # makedumpfile reads the exported core, and agrees
        exported = subprocess.run([core / "khib-restore", vda, "--export", tmp_path / "core"],
                                  capture_output=True, text=True, check=False)
        assert exported.returncode == 0, exported.stderr
        assert abs(makedumpfile_free_pages(tmp_path / "core", tmp_path) - recorded) <= \
            recorded * 0.01
