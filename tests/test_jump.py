"""kexec jump round trips with the image's own tools, on the kernels khib-build built
(x86_64 and i386, each with its own default image), QEMU TCG, 512 MiB: the jump
scenario's run (tests/jumps.py). Five jumps, each a different end in B (a failing
command; a save, damage all over A and a restore; a hanging command; the OOM killer; a
disk too small to hibernate to); a window under a memmap= reservation is refused before
any jump. Each time B returns, A reports what happened, and A's file, its process's
memory and its kernel log are as before."""

from __future__ import annotations

import re

import pytest

from tests.guest import WINDOW, Target, a_ram, assert_a_intact, target_for
from tests.helpers import loads
from tests.jumps import JumpRun

pytestmark = pytest.mark.slow


@pytest.fixture(params=["x86_64", "i386"])
def target(request: pytest.FixtureRequest) -> Target:
    return target_for(request)


def covered(segments: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge (start, end) spans into disjoint runs."""
    runs: list[tuple[int, int]] = []
    for start, end in sorted(segments):
        if runs and start <= runs[-1][1]:
            runs[-1] = (runs[-1][0], max(runs[-1][1], end))
        else:
            runs.append((start, end))
    return runs


def without(ranges: list[tuple[int, int]], holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    for low, high in holes:
        ranges = [piece for start, end in ranges
                  for piece in ((start, min(end, low)), (max(start, high), end))
                  if piece[0] < piece[1]]
    return covered(ranges)


def test_round_trips_keep_all_of_a(jump_run: JumpRun) -> None:
    console = jump_run.console
    tail = console[-8000:]
    assert jump_run.returncode == 0, tail + jump_run.stderr
    outcomes = dict(re.findall(r"A-JUMP (\w+) result=(\d+)", console))
    assert outcomes == {"fail": "1", "save": "0", "hang": "1", "oom": "1", "small": "1",
                        "reserved": "1", "unaligned": "1"}, tail
    # Each return says what happened in B.
    assert "khib: in B: failed: the command in B exited 3" in console, tail
    assert "khib: in B: failed: the command in B still ran after 5 s" in console, tail
    assert "khib: in B: failed: the command in B ran out of memory" in console, tail
    assert re.search(r"hibernation failed, A carries on \(the image on /dev/vdb is set aside\): "
                     r"failed: the command in B exited 1: khib: khib-save: /dev/vdb: the image "
                     r"outgrew the room there \(\d+ MiB\)", console), tail
    assert re.search(r"the window 400M:16M lies in memory reserved by memmap=16M\$400M: .*"
                     r"Boot A without it", console), tail
    # An unaligned window would give B 512 KiB of A's live RAM that kexec never backed up.
    assert re.search(r"the window 0x10080000:0x4000000 is not in whole MiB", console), tail
    # Neither failed save left an image that looks complete.
    assert "A-INFO oom 1" in console and "A-INFO small 1" in console, tail
    assert console.count("no complete image (a save did not finish") >= 2, tail
    # B saved A, damaged all of it in A's memory, saw the damage, restored it.
    assert re.search(r"B-MARKER kexec_jump_back_entry=0x[0-9a-f]+", console), tail
    damaged = re.search(r"B damaged (\d+) MiB", console)
    assert damaged, tail
    differs = re.search(r"B-VERIFY result=1 differs=(\d+)", console)
    assert differs and int(differs[1]) > 0, tail
    assert "segments written and verified" in console, tail
    assert_a_intact(console, ["fail", "save", "hang", "oom", "small"])
    # The image covers every page of A's System RAM but the window (docs/jump.md): A's
    # 4 KiB-640 KiB from B's kernel's copy of it, A's 1-16 MiB included.
    segments, _ = loads(jump_run.disk("vda"))
    assert int(damaged[1]) == sum(s.memsz for s in segments) >> 20  # B damaged all of it
    start, size = (int(part[:-1]) << 20 for part in WINDOW.split(":"))
    expected = without(a_ram(console), [(start, start + size)])
    assert covered([(s.paddr, s.paddr + s.memsz) for s in segments]) == expected
    assert any(s.paddr <= 0x100000 < s.paddr + s.memsz for s in segments)
    assert any(s.paddr < 0xA0000 for s in segments)
