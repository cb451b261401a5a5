"""Calling into B and back, again and again, on both arches (QEMU TCG, 512 MiB, 2 CPUs; one
boot each): B starts a process holding a random token and logs a line, and jumps back;
A reads B's memory as an ELF core (``khib other-core``) and finds the token and B's log
line in it (readelf lists its PT_LOADs; makedumpfile reads B's log out of it on x86_64),
writes a new token where B's was (``khib other-poke``) and enters B again (``khib jump
--again``): B's process reads the new token and writes its reply, which A then finds in
B's core. Three rounds, A intact after each; a ``kexec -e`` not through khib finds B going
straight back; ``khib jump --unload`` gives A back the pages that held B, and a later
``--again`` is refused; with another image loaded outside khib and B's record put back,
``khib other-poke`` refuses the old list; a new ``khib jump`` unloads what is loaded
before it checks its window."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import built_once
from tests.guest import (
    CPUS,
    MEMORY,
    WINDOW,
    Target,
    a_initrd,
    a_script,
    appended,
    assert_a_intact,
    disk,
    target_for,
)
from tests.helpers import MiB, khib

pytestmark = pytest.mark.slow

HELD, HELD_END = b"KHIB-TEST-HELD:", b":HELD-END"  # around B's token in its process
REPLY, REPLY_END = b"KHIB-TEST-REPLY:", b":REPLY-END"  # around its reply to A's token
ROUNDS = 3

# B's service: holds a token (built in place: no other copy of the marked token exists in
# B's memory), logs a line; on SIGUSR1 reads the token and replies with its SHA-256.
SERVICE_PY = f"""import hashlib, os, signal
HELD, END = {HELD!r}, {HELD_END!r}
held = bytearray(8192)
held[:len(HELD)] = HELD
held[len(HELD):len(HELD) + 16] = os.urandom(16)
held[len(HELD) + 16:len(HELD) + 16 + len(END)] = END
log = os.urandom(8).hex()
with open("/dev/kmsg", "w") as kmsg:
    kmsg.write(f"khib-test: B holds a token (log {{log}})\\n")
print("B-TOKEN", bytes(held[len(HELD):len(HELD) + 16]).hex(), log, flush=True)
replies = []

def tell(text):
    with open("/tmp/service.fifo", "w") as fifo:
        fifo.write(text + "\\n")

REPLY, REPLY_END = {REPLY!r}, {REPLY_END!r}

def answer(*_):
    token = bytes(held[len(HELD):len(HELD) + 16])
    reply = bytearray(len(REPLY) + 16 + len(REPLY_END))
    reply[:len(REPLY)] = REPLY
    reply[len(REPLY):len(REPLY) + 16] = hashlib.sha256(token).digest()[:16]
    reply[len(REPLY) + 16:] = REPLY_END
    replies.append(reply)
    print("B-REPLY", token.hex(), flush=True)
    tell("replied")

signal.signal(signal.SIGUSR1, answer)
tell("ready")
while True:
    signal.pause()
"""
# khib.run's command in B, at every call: the first starts the service, the others ask it.
SERVE_SH = """#!/bin/sh
if [ -e /tmp/service.pid ]; then
    kill -USR1 "$(cat /tmp/service.pid)"
else
    mkfifo /tmp/service.fifo
    python3 /boot/service.py & echo $! > /tmp/service.pid
fi
read -r said < /tmp/service.fifo
echo "B-SERVED $said"
"""
# In A: find a marked run in B's core (every match: PHYS HEX), or write a new token where
# B's is and print it.
CORE_PY = """import os, re, struct, subprocess, sys
with open(sys.argv[2], "rb") as f:
    data = f.read()
phoff, = struct.unpack_from("<Q", data, 32)
phnum, = struct.unpack_from("<H", data, 56)
loads = [struct.unpack_from("<IIQQQQQQ", data, phoff + 56 * i) for i in range(phnum)]
def found(start, end):
    for match in re.finditer(re.escape(start) + b"(.{16})" + re.escape(end), data, re.S):
        for kind, _, offset, _, paddr, size, _, _ in loads:
            if kind == 1 and offset <= match.start(1) < offset + size:
                yield paddr + match.start(1) - offset, match[1]
if sys.argv[1] == "poke":
    held = list(found(@HELD@))
    print("A-HELD", len(held), flush=True)
    token = os.urandom(16)
    with open("/tmp/token", "wb") as f:
        f.write(token)
    done = subprocess.run(["khib", "other-poke", hex(held[0][0]), "/tmp/token"])
    print("A-POKED", token.hex(), done.returncode, flush=True)
else:
    print("A-REPLIES", " ".join(value.hex() for _, value in found(@REPLY@)), flush=True)
""".replace("@HELD@", f"{HELD!r}, {HELD_END!r}").replace("@REPLY@", f"{REPLY!r}, {REPLY_END!r}")
A_BODY = """
# Free memory in kB: MemFree and the pages on the per-CPU free lists (MemFree leaves
# them out, and pages freed land there first), the per-CPU counters folded in.
memfree() {
    echo 1 > /proc/sys/vm/stat_refresh
    echo $(($(sed -n 's/^MemFree: *\\([0-9]*\\) kB/\\1/p' /proc/meminfo) + \\
        4 * $(awk '$1 == "count:" { n += $2 } END { print n }' /proc/zoneinfo)))
}
jump --b-run /boot/serve.sh; echo "A-JUMP call0 result=$?"; check call0
khib other-core /tmp/b.core; echo "A-CORE call0 result=$?"
dd if=/tmp/b.core of=/dev/vda bs=1M 2>/dev/null
for round in @ROUNDS@; do
    python3 /boot/core.py poke /tmp/b.core
    khib jump --again; echo "A-JUMP call$round result=$?"; check call$round
    khib other-core /tmp/b.core; echo "A-CORE call$round result=$?"
    python3 /boot/core.py replies /tmp/b.core
done
dd if=/tmp/b.core of=/dev/vdb bs=1M 2>/dev/null; rm /tmp/b.core
kexec -e -x; check stray  # not through khib: B goes straight back, and cannot be called again
khib jump --again; echo "A-AFTER-STRAY result=$?"
cp /run/khib/b.json /tmp/b.json
echo "A-MEMFREE before $(memfree)"
khib jump --unload; echo "A-UNLOAD result=$?"
echo "A-MEMFREE after $(memfree)"
khib jump --again; echo "A-AFTER-UNLOAD result=$?"
# Another image loaded outside khib (into B's freed pages, as likely as not), B's record
# put back: its old list is not trusted, nothing is written.
kexec -l /boot/bzImage --append=quiet; cp /tmp/b.json /run/khib/b.json
khib other-poke @WINDOW_START@ /tmp/token; echo "A-STALE result=$?"
# A new B replaces a loaded image before the window is checked (this one is refused).
khib jump --kernel /boot/bzImage --initrd /boot/initrd --window 128M:4096M
echo "A-REPLACE result=$? loaded=$(cat /sys/kernel/kexec_loaded)"
echo "A-END complaints=$(dmesg | grep -c -E 'BUG|Oops|WARNING|Call Trace')"
""".replace("@ROUNDS@", " ".join(str(n) for n in range(1, ROUNDS + 1))).replace(
    "@WINDOW_START@", hex(int(WINDOW.split(":")[0][:-1]) << 20))


@pytest.fixture(params=["x86_64", "i386"])
def target(request: pytest.FixtureRequest) -> Target:
    return target_for(request)


def run_calls(target: Target, folder: Path) -> None:
    """Boot A with the calls; keep its console, the time it took and both cores' disks."""
    work = folder / "initrd"
    work.mkdir()
    initrd = a_initrd(target, work, a_script("tok-again", A_BODY),
                      {"boot/service.py": SERVICE_PY.encode(), "boot/serve.sh": SERVE_SH.encode()})
    initrd.write_bytes(appended(initrd.read_bytes(), {"boot/core.py": CORE_PY.encode()}, work))
    disks = [disk(folder / f"{name}.img", 80) for name in ("vda", "vdb")]
    started = time.monotonic()
    result = khib("boot", "-c", target.config, "--kernel", target.kernel, "--image", initrd,
                  "--memory", MEMORY, "--cpus", CPUS,
                  *[arg for d in disks for arg in ("--disk", d)], "--run", "/boot/a.sh",
                  "--expect", "A-END", "--timeout", 1200)
    (folder / "seconds").write_text(f"{time.monotonic() - started:.0f}")
    (folder / "console.txt").write_text(result.stdout + result.stderr)
    shutil.rmtree(work)


@pytest.fixture
def calls(target: Target, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return built_once(tmp_path_factory, f"jump-again-{target.arch}",
                      lambda folder: run_calls(target, folder))


def program_headers(core: Path) -> str:
    return subprocess.run(["readelf", "-l", "-W", str(core)], capture_output=True, text=True,
                          check=True).stdout


def test_calls_into_b_and_back(target: Target, calls: Path, tmp_path: Path) -> None:
    console = (calls / "console.txt").read_text()
    tail = console[-8000:]
    assert "A-END complaints=0" in console, tail
    results = dict(re.findall(r"A-JUMP (\w+) result=(\d+)", console))
    assert results == {f"call{n}": "0" for n in range(ROUNDS + 1)}, tail
    cores = dict(re.findall(r"A-CORE (\w+) result=(\d+)", console))
    assert set(cores.values()) == {"0"} and len(cores) == ROUNDS + 1, tail
    assert_a_intact(console, [*(f"call{n}" for n in range(ROUNDS + 1)), "stray"])
    # The first core: B's token and its log line, at B's physical addresses in the window.
    token, log = re.search(r"B-TOKEN ([0-9a-f]{32}) ([0-9a-f]{16})", console).groups()
    first = (calls / "vda.img").read_bytes()
    assert HELD + bytes.fromhex(token) + HELD_END in first
    assert f"khib-test: B holds a token (log {log})".encode() in first
    start, size = (int(part[:-1]) << 20 for part in WINDOW.split(":"))
    loads = re.findall(r"^\s+LOAD\s+0x[0-9a-f]+ 0x([0-9a-f]+) 0x([0-9a-f]+) 0x([0-9a-f]+)",
                       program_headers(calls / "vda.img"), re.MULTILINE)
    assert loads, program_headers(calls / "vda.img")
    assert all(start <= int(paddr, 16) and int(paddr, 16) + int(filesz, 16) <= start + size
               for _, paddr, filesz in loads)
    assert sum(int(filesz, 16) for _, _, filesz in loads) == size
    assert "NOTE" in program_headers(calls / "vda.img")
    if target.arch == "x86_64":  # makedumpfile on this host reads x86_64 cores only
        subprocess.run(["makedumpfile", "--dump-dmesg", calls / "vda.img", tmp_path / "dmesg"],
                       check=True, capture_output=True)
        assert f"khib-test: B holds a token (log {log})" in (tmp_path / "dmesg").read_text()
    # Each round: A found one token, wrote a new one, B read that one and replied, and A
    # found the reply in B's core.
    assert re.findall(r"A-HELD (\d+)", console) == ["1"] * ROUNDS, tail
    poked = re.findall(r"A-POKED ([0-9a-f]{32}) 0", console)
    assert len(poked) == ROUNDS, tail
    assert re.findall(r"B-REPLY ([0-9a-f]{32})", console) == poked, tail
    replies = re.findall(r"A-REPLIES ([0-9a-f ]*)", console)
    for round_, new in enumerate(poked):
        assert hashlib.sha256(bytes.fromhex(new)).digest()[:16].hex() in replies[round_], tail
    last = (calls / "vdb.img").read_bytes()
    assert REPLY + hashlib.sha256(bytes.fromhex(poked[-1])).digest()[:16] + REPLY_END in last
    # A kexec -e not through khib: B went straight back; khib cannot call it any more.
    assert "khib: entered again without a request from khib jump --again" in console, tail
    assert "A-AFTER-STRAY result=1" in console and "B's mailbox is gone" in console, tail
    # Unloading gives A back the pages that held B; B cannot be entered any more.
    assert "A-UNLOAD result=0" in console, tail
    held = re.search(r"khib: unloaded B \(B's memory: (\d+) MiB in \d+ pages; its kernel "
                     r"/boot/bzImage\): "
                     r"([\d.]+) MiB free again \(MemFree rose by ([\d.]+) MiB", console)
    assert held and int(held[1]) == size >> 20, tail
    assert float(held[2]) >= size >> 20, held[0]  # B's pages, its list's, its control pages
    # As A's shell sees it, around the whole khib process (whose own allocations, slab and
    # the like, come and go): within a MiB.
    before, after = (int(re.search(rf"A-MEMFREE {when} (\d+)", console)[1])
                     for when in ("before", "after"))
    assert (after - before) << 10 >= size - MiB, (before, after)
    assert "A-AFTER-UNLOAD result=1" in console, tail
    assert "khib: no B to enter again: no kexec image is loaded" in console, tail
    # Another image in B's place, B's record put back: refused, nothing written.
    stale = console[console.index("A-AFTER-UNLOAD"):console.index("A-STALE")]
    assert "A-STALE result=1" in console, tail
    assert re.search(r"khib: khib-other: (no loaded image of B to read|the kexec image loaded "
                     r"now is not the B that jumped back)", stale), stale
    assert "wrote" not in stale, stale
    # A new B unloads what is loaded first, and says what it was.
    assert "A-REPLACE result=1 loaded=0" in console, tail
    assert "khib: the new B replaces the image loaded: unloaded a kexec image that is not " \
           "the B that came back" in console, tail
