"""A hibernated by the kernel's own hibernation (swsusp) or by khib, on the same kernel,
QEMU machine, initrd and workload (bench/hibernate.py compares the two; test_swsusp keeps
the kernel's own working on khib's kernel, so that the comparison stays honest).

A: a 64 MiB random tmpfs file, a process holding 32 MiB of random data, 160 MiB written to
tmpfs and deleted, a token in a shell variable. Each boot's console lines are kept with
their host seconds from the start of its QEMU process."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from khib_build.kernel.boot import kernel_cmdline, qemu_command, qemu_for
from tests.guest import appended, disk

CPUS = 2
WINDOW = "128M:64M"
DISK_MIB = 2048  # room for the largest image either method writes at 4 GiB of A
TIMEOUT = 1800  # seconds a boot may take
HOLDER = """import hashlib, os, signal
data = bytearray(os.urandom(32 << 20))
def tell(*_):
    with open("/tmp/holder.fifo", "w") as fifo:
        fifo.write(hashlib.md5(data).hexdigest() + "\\n")
signal.signal(signal.SIGUSR1, tell)
tell()
while True:
    signal.pause()
"""
WORKLOAD = """#!/bin/sh
token=tok-$(head -c 8 /dev/urandom | md5sum | cut -c 1-16)
dd if=/dev/urandom of=/tmp/blob bs=1M count=64 2>/dev/null
mkfifo /tmp/holder.fifo
python3 /boot/holder.py & holder=$!
read -r held < /tmp/holder.fifo
dd if=/dev/urandom of=/tmp/dirty bs=1M count=160 2>/dev/null; rm /tmp/dirty
blob=$(md5sum /tmp/blob | cut -d ' ' -f 1)
sync; echo 3 > /proc/sys/vm/drop_caches
echo "A-READY token=$token $(awk '/MemTotal|MemFree/ {printf "%s%s ", $1, $2}' /proc/meminfo)"
@PREPARE@
echo HIB-GO
@HIBERNATE@
echo "A-RESUMED $?"
kill -USR1 $holder; read -r again < /tmp/holder.fifo
[ "$(md5sum /tmp/blob | cut -d ' ' -f 1)" = "$blob" ] && [ "$again" = "$held" ] \
    && echo "A-INTACT token=$token cpus=$(cat /sys/devices/system/cpu/online)" \
    || echo "A-BROKEN token=$token"
poweroff -f
"""
SWAP = "mkswap /dev/vda > /dev/null && swapon /dev/vda && echo shutdown > /sys/power/disk"
SWSUSP = "echo disk > /sys/power/state"
# Each method: what A runs before it hibernates, its hibernate command, what the first
# and the second boot add to the command line.
METHODS = {
    "swsusp": (SWAP, SWSUSP, "resume=/dev/vda", "resume=/dev/vda"),
    # A 6.9+ kernel with CRYPTO_LZ4 compresses its image with LZ4 when told so (the
    # image's header says which: the resume needs no word).
    "swsusp-lz4": (SWAP, SWSUSP, "resume=/dev/vda hibernate.compressor=lz4", "resume=/dev/vda"),
    "khib": ("", f"khib hibernate --kernel /boot/bzImage --initrd /boot/initrd --window {WINDOW} "
             "--device /dev/vda", "", "khib.resume=/dev/vda"),
}



@dataclass
class Run:
    """One hibernation and resume: the figures, and each boot's console lines with their
    host seconds from the start of its QEMU process."""
    save_s: float
    resume_s: float
    written: int
    read: int
    first: list[tuple[float, str]]
    second: list[tuple[float, str]]




class NotWhole(Exception):
    """A did not hibernate, or did not come back as it was."""


def qmp(path: Path, command: str) -> dict[str, object]:
    """One QMP command's answer over QEMU's monitor socket."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(path))
        reader = sock.makefile("r")
        reader.readline()  # the greeting
        for message in ({"execute": "qmp_capabilities"}, {"execute": command}):
            sock.sendall(json.dumps(message).encode() + b"\n")
            while True:
                answer = json.loads(reader.readline())
                if "return" in answer or "error" in answer:
                    break
        return answer


def watch(command: list[str], until: str | None = None, monitor: Path | None = None,
          ) -> tuple[list[tuple[float, str]], float, dict[str, object]]:
    """Run QEMU to its end; each console line with its host seconds from the start; the
    seconds to the end of the process, or to the first line holding ``until``, when
    ``monitor``'s block statistics are read."""
    started = time.monotonic()
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, errors="replace")
    assert process.stdout is not None
    lines: list[tuple[float, str]] = []
    seconds, stats = 0.0, {}
    try:
        for line in process.stdout:
            lines.append((time.monotonic() - started, line.rstrip("\r\n")))
            if until and not seconds and until in line:
                seconds = lines[-1][0]
                stats = qmp(monitor, "query-blockstats") if monitor else {}
            if time.monotonic() - started > TIMEOUT:
                break
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    return lines, seconds or time.monotonic() - started, stats


def when(lines: list[tuple[float, str]], text: str, after: float = 0.0) -> float | None:
    """The host time of the first line holding ``text`` at or after ``after``."""
    return next((at for at, line in lines if at >= after and text in line), None)


def failed(what: str, lines: list[tuple[float, str]]) -> NotWhole:
    return NotWhole(f"{what}:\n" + "\n".join(line for _, line in lines[-80:]))


def hibernate_once(method: str, memory: int, kernel: Path, initrd: Path, work: Path) -> Run:
    """Boot A, hibernate it with ``method``, boot again and resume it; check A."""
    _, _, save_append, resume_append = METHODS[method]
    vda = disk(work / f"{method}-{memory}.img", DISK_MIB)
    qemu = qemu_for(kernel)
    first, save_end, _ = watch(qemu_command(qemu, kernel, initrd,
                                            kernel_cmdline("/boot/a.sh", save_append),
                                            memory, (vda,), CPUS))
    go = when(first, "HIB-GO")
    if go is None or when(first, "reboot: Power down", go) is None:
        raise failed(f"{method}, {memory} MiB: A did not hibernate and power off", first)
    written = os.stat(vda).st_blocks * 512
    monitor = work / "qmp.sock"
    command = [*qemu_command(qemu, kernel, initrd,
                             kernel_cmdline("echo NOT-RESUMED", resume_append), memory, (vda,),
                             CPUS), "-qmp", f"unix:{monitor},server=on,wait=off"]
    second, resume_s, stats = watch(command, "A-RESUMED", monitor)
    token = re.search(r"A-READY token=(\S+)", "\n".join(line for _, line in first))
    intact = re.search(r"A-INTACT token=(\S+) cpus=(\S+)", "\n".join(line for _, line in second))
    if not (token and intact and intact[1] == token[1] and intact[2] == f"0-{CPUS - 1}"):
        raise failed(f"{method}, {memory} MiB: A did not come back whole", second)
    vda.unlink()
    read = sum(int(device["stats"]["rd_bytes"]) for device in stats["return"])
    return Run(save_end - go, resume_s, written, read, first, second)


def a_initrd(kernel: Path, image: Path, method: str, work: Path) -> Path:
    """The default image with A's workload (for ``method``), B's kernel and initrd."""
    prepare, hibernate, _, _ = METHODS[method]
    script = WORKLOAD.replace("@PREPARE@", prepare).replace("@HIBERNATE@", hibernate)
    data = image.read_bytes()
    root = work / f"initrd-{method}"
    root.mkdir(exist_ok=True)
    path = work / f"a-{method}.cpio"
    path.write_bytes(appended(data, {"boot/bzImage": kernel.read_bytes(), "boot/initrd": data,
                                     "boot/holder.py": HOLDER.encode(),
                                     "boot/a.sh": script.encode()}, root))
    return path
