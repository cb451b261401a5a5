"""kexec jump round trips with the image's own tools, on the kernels khib-build built
(x86_64 and i386, each with its own default image), QEMU TCG, 512 MiB.

A holds 64 MiB of random data in a tmpfs file and 32 MiB in a process, and jumps five
times. B's command fails; B saves A, overwrites every page the image covers, sees
``khib restore --verify`` report it, restores; B's command hangs past the deadline; B
fills its /tmp to the cap and its command outgrows what is left before it would save,
and the OOM killer ends it; B is asked to hibernate A to a disk too small. Each time B returns,
A reports what happened, and A's file, its process's memory and its kernel log are as
before. A window under a memmap= reservation is refused before any jump."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import pytest

from tests.guest import (
    CPUS,
    MEMORY,
    WINDOW,
    Target,
    a_initrd,
    a_ram,
    a_script,
    assert_a_intact,
    disk,
    target_for,
)
from tests.helpers import khib, loads

pytestmark = pytest.mark.slow

# In B: overwrite every page the saved image covers, in A's memory, through shared
# mappings of /dev/mem (read and write stop at the end of B's own RAM; a mapping reaches
# A's RAM beyond it).
DAMAGE_PY = """import mmap, os, struct, sys
with open(sys.argv[1], "rb") as f:
    header = f.read(64)
    phoff, = struct.unpack_from("<Q", header, 32)
    phnum, = struct.unpack_from("<H", header, 56)
    f.seek(phoff)
    loads = [struct.unpack("<IIQQQQQQ", f.read(56)) for _ in range(phnum)]
mem = os.open("/dev/mem", os.O_RDWR | os.O_SYNC)
pattern, total = b"\\xa5" * (1 << 20), 0
for kind, _, _, _, paddr, _, memsz, _ in loads:
    at = paddr
    while kind == 0x6B480000 and at < paddr + memsz:
        length = min(1 << 20, paddr + memsz - at)
        view = mmap.mmap(mem, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE,
                         offset=at)
        view[:] = pattern[:length]
        view.close()
        at += length
        total += length
print("B damaged", total >> 20, "MiB")
"""
B_SCRIPT = """#!/bin/sh
echo "B-MARKER $(grep -o 'kexec_jump_back_entry=[^ ]*' /proc/cmdline)"
khib save /dev/vda && khib info /dev/vda | head -n 1
python3 /boot/damage.py /dev/vda
khib restore /dev/vda --verify > /tmp/verify 2>&1
echo "B-VERIFY result=$? differs=$(grep -c 'differs from the image' /tmp/verify)"
khib restore /dev/vda
"""
RESERVED = "memmap=16M$400M"  # on A's command line: a window there is refused
A_BODY = f"""
jump --b-run 'exit 3'; echo "A-JUMP fail result=$?"; check fail
jump --b-run /boot/b.sh; echo "A-JUMP save result=$?"; check save
jump --b-run 'sleep 1000' --deadline 5; echo "A-JUMP hang result=$?"; check hang
jump --b-run 'dd if=/dev/zero of=/tmp/fill bs=1M; x=$(head -c 67108864 /dev/zero | tr -c y y); \
khib save /dev/vdb'
echo "A-JUMP oom result=$?"; check oom
khib info /dev/vdb; echo "A-INFO oom $?"
khib hibernate --kernel /boot/bzImage --initrd /boot/initrd --window {WINDOW} --device /dev/vdc
echo "A-JUMP small result=$?"; check small
khib info /dev/vdc; echo "A-INFO small $?"
khib jump --kernel /boot/bzImage --initrd /boot/initrd --window 400M:16M
echo "A-JUMP reserved result=$?"
"""


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


def test_round_trips_keep_all_of_a(target: Target, tmp_path: Path) -> None:
    token = f"tok-{secrets.token_hex(12)}"
    initrd = a_initrd(target, tmp_path, a_script(token, A_BODY),
                      {"boot/b.sh": B_SCRIPT.encode(), "boot/damage.py": DAMAGE_PY.encode()})
    disks = [disk(tmp_path / "vda.img", 512), disk(tmp_path / "vdb.img", 64),
             disk(tmp_path / "vdc.img", 32)]
    result = khib("boot", "-c", target.config, "--kernel", target.kernel, "--image", initrd,
                  "--memory", MEMORY, "--cpus", CPUS,
                  *[arg for d in disks for arg in ("--disk", d)],
                  "--append", RESERVED, "--run", "/boot/a.sh",
                  "--expect", "A-JUMP reserved", "--timeout", 1200)
    console = result.stdout
    tail = console[-8000:]
    assert result.returncode == 0, tail + result.stderr
    outcomes = dict(re.findall(r"A-JUMP (\w+) result=(\d+)", console))
    assert outcomes == {"fail": "1", "save": "0", "hang": "1", "oom": "1", "small": "1",
                        "reserved": "1"}, tail
    # Each return says what happened in B.
    assert "khib: in B: failed: the command in B exited 3" in console, tail
    assert "khib: in B: failed: the command in B still ran after 5 s" in console, tail
    assert "khib: in B: failed: the command in B ran out of memory" in console, tail
    assert re.search(r"hibernation failed, A carries on: failed: the command in B exited 1: "
                     r"khib: khib-save: /dev/vdc: the image outgrew the room there \(\d+ MiB\)",
                     console), tail
    assert re.search(r"the window 400M:16M lies in memory reserved by memmap=16M\$400M: .*"
                     r"Boot A without it", console), tail
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
    # The image covers every page of A's System RAM but B's own: 4 KiB-640 KiB and the
    # window (docs/jump.md); A's 1-16 MiB included.
    segments, _ = loads(tmp_path / "vda.img")
    assert int(damaged[1]) == sum(s.memsz for s in segments) >> 20  # B damaged all of it
    start, size = (int(part[:-1]) << 20 for part in WINDOW.split(":"))
    expected = without(a_ram(console), [(0x1000, 0xA0000), (start, start + size)])
    assert covered([(s.paddr, s.paddr + s.memsz) for s in segments]) == expected
    assert any(s.paddr <= 0x100000 < s.paddr + s.memsz for s in segments)
