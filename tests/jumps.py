"""The jump scenario: one QEMU run of A per arch (TCG, 512 MiB, two CPUs) on the kernel and
default image khib-build built, whose console and disks test_jump and test_freepages read
(conftest's ``jump_run`` runs it once per test run).

A holds 32 MiB of random data in a tmpfs file and 16 MiB in a process and jumps five
times. B's command fails. A writes 160 MiB more (copies of its file), deletes them and
drops its caches, so its free pages hold old data; B saves A twice, leaving A's free
pages out (/dev/vda) and keeping them (/dev/vdc), overwrites every page the first image
covers (the free ones included), sees ``khib restore --verify`` report it, restores. B's
command hangs past the deadline. B fills its /tmp to the cap and its command outgrows
what is left before it would save, and the OOM killer ends it. B is asked to hibernate A
to a disk too small. A window under a memmap= reservation is refused before any jump.
After every return A checks its file, its process and its kernel log; at the end it
allocates, fills and reads back 200 MiB."""

from __future__ import annotations

import json
import secrets
import shutil
from pathlib import Path
from typing import NamedTuple

from tests.guest import CPUS, MEMORY, WINDOW, Target, a_initrd, a_script, disk
from tests.helpers import khib

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
low = os.open("/sys/kernel/kexec_jump_low", os.O_RDWR)
pattern, total = b"\\xa5" * (1 << 20), 0
for kind, _, _, _, paddr, _, memsz, _ in loads:
    at = paddr
    while kind == 0x6B480000 and at < paddr + memsz:
        length = min(1 << 20, paddr + memsz - at)
        if at < 0xA0000:  # A's low memory: in B's kernel's copy of it (B runs in its own)
            os.pwrite(low, pattern[:length], at)
        else:
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
khib save /dev/vdc --keep-free-pages; echo "B-SAVE all $?"
python3 /boot/damage.py /dev/vda
khib restore /dev/vda --verify > /tmp/verify 2>&1
echo "B-VERIFY result=$? differs=$(grep -c 'differs from the image' /tmp/verify)"
khib restore /dev/vda
"""
RESERVED = "memmap=16M$400M"  # on A's command line: a window there is refused
# Before the save jump A dirties 160 MiB and frees it: its free pages hold old data (a
# jump before that would not do: B's load takes free pages and hands them back zeroed).
A_BODY = f"""
jump --b-run 'exit 3'; echo "A-JUMP fail result=$?"; check fail
cat /tmp/blob /tmp/blob /tmp/blob /tmp/blob /tmp/blob > /tmp/dirty
rm /tmp/dirty; sync; echo 3 > /proc/sys/vm/drop_caches
jump --b-run /boot/b.sh; echo "A-JUMP save result=$?"; check save
jump --b-run 'sleep 1000' --deadline 5; echo "A-JUMP hang result=$?"; check hang
jump --b-run 'dd if=/dev/zero of=/tmp/fill bs=1M; x=$(head -c 67108864 /dev/zero | tr -c y y); \
khib save /dev/vdb'
echo "A-JUMP oom result=$?"; check oom
khib info /dev/vdb; echo "A-INFO oom $?"
khib hibernate --kernel /boot/bzImage --initrd /boot/initrd --window {WINDOW} --device /dev/vdb
echo "A-JUMP small result=$?"; check small
khib info /dev/vdb; echo "A-INFO small $?"
khib jump --kernel /boot/bzImage --initrd /boot/initrd --window 400M:16M
echo "A-JUMP reserved result=$?"
khib jump --kernel /boot/bzImage --initrd /boot/initrd --window 262656K:64M
echo "A-JUMP unaligned result=$?"
python3 -c "
blocks = [bytes([k]) * (1 << 20) for k in range(1, 201)]
print('A-ALLOC', sum(b.count(k) == len(b) for k, b in enumerate(blocks, 1)))
"
echo "A-END complaints=$(dmesg | grep -c -E 'BUG|Oops|WARNING|corrupt')"
"""
# MiB: /dev/vda, /dev/vdb, /dev/vdc. The OOM jump never gets to write /dev/vdb, and the
# small one finds it too small; each disk is a PCI device that every boot of B sets up
# (0.8 s each on i386 under TCG), so the two share it.
DISKS = {"vda": 512, "vdb": 32, "vdc": 512}


class JumpRun(NamedTuple):
    console: str
    returncode: int  # khib-build boot's
    stderr: str
    folder: Path  # holds the disks, vda.img to vdc.img

    def disk(self, name: str) -> Path:
        return self.folder / f"{name}.img"


def run_scenario(target: Target, folder: Path) -> None:
    """Boot A on ``target`` with the scenario; keep its console and disks in ``folder``."""
    token = f"tok-{secrets.token_hex(12)}"
    work = folder / "initrd"
    work.mkdir()
    initrd = a_initrd(target, work, a_script(token, A_BODY),
                      {"boot/b.sh": B_SCRIPT.encode(), "boot/damage.py": DAMAGE_PY.encode()})
    disks = [disk(folder / f"{name}.img", mib) for name, mib in DISKS.items()]
    result = khib("boot", "-c", target.config, "--kernel", target.kernel, "--image", initrd,
                  "--memory", MEMORY, "--cpus", CPUS,
                  *[arg for d in disks for arg in ("--disk", d)],
                  "--append", RESERVED, "--run", "/boot/a.sh",
                  "--expect", "A-END", "--timeout", 1500)
    shutil.rmtree(work)  # the tests read the console and the disks
    (folder / "console.txt").write_text(result.stdout)
    (folder / "boot.json").write_text(json.dumps({"returncode": result.returncode,
                                                  "stderr": result.stderr}))


def read_run(folder: Path) -> JumpRun:
    boot = json.loads((folder / "boot.json").read_text())
    return JumpRun((folder / "console.txt").read_text(), boot["returncode"], boot["stderr"],
                   folder)
