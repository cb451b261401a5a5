"""What the jump and hibernation tests run in the guest: kernel A's workload and its checks,
the initrds that carry them, disks, and reading the console's verdicts."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import DEFAULT_CONFIG, X86_64_CONFIG, assert_ok, fmt, khib

MEMORY = 512  # MiB, for A and for every boot that resumes it
NORMAL = "echo NORMAL-$((1 + 1))-BOOT"  # what a boot that does not resume runs (and prints)
ONE_CPU = "maxcpus=1"  # a resume boot runs on one CPU (docs/jump.md)
CPUS = 2  # A's CPUs: all of them must be online after every return
WINDOW = "128M:64M"  # B's window in A's RAM


@dataclass(frozen=True)
class Target:
    arch: str
    config: Path
    image: Path
    kernel: Path


FIXTURES = {"x86_64": (X86_64_CONFIG, "image_x86_64", "kernel_x86_64"),
            "i386": (DEFAULT_CONFIG, "default_image", "kernel_i386")}


def target_for(request: pytest.FixtureRequest) -> Target:
    """Each arch's config, default image and built kernel (``request.param``: the arch)."""
    config, image, kernel = FIXTURES[request.param]
    return Target(request.param, config, request.getfixturevalue(image),
                  request.getfixturevalue(kernel))


def appended(image: bytes, files: dict[str, bytes], root: Path) -> bytes:
    """``image`` with an uncompressed segment holding ``files`` (scripts executable: a
    .sh or .py name, or a #! line)."""
    tree = root / f"segment-{len(list(root.iterdir()))}"
    for name, data in files.items():
        path = tree / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o755 if name.endswith((".sh", ".py")) or data.startswith(b"#!") else 0o644)
    assert_ok(khib("pack", tree, "-o", tree.with_suffix(".cpio"), "--compress", "none"))
    return image + b"\0" * (-len(image) % 4) + tree.with_suffix(".cpio").read_bytes()


def disk(path: Path, mib: int) -> Path:
    with path.open("wb") as sparse:
        sparse.truncate(mib << 20)
    return path


# A process holding 16 MiB of random data. On SIGUSR1 it hashes them again, then runs
# pinned to CPU 1 and tells the CPU it ran on through a FIFO, which A's shell reads (no
# Python start and no sleep per check).
HOLDER_PY = """import hashlib, os, signal
data = bytearray(os.urandom(16 << 20))
print("HOLDER start", hashlib.md5(data).hexdigest(), flush=True)
everywhere = os.sched_getaffinity(0)

def tell(text):
    with open("/tmp/holder.fifo", "w") as fifo:
        fifo.write(text + "\\n")

def again(*_):
    print("HOLDER again", hashlib.md5(data).hexdigest(), flush=True)
    try:
        os.sched_setaffinity(0, {1})
        sum(range(10 ** 5))
        cpu = open("/proc/self/stat").read().split()[38]
        os.sched_setaffinity(0, everywhere)
    except OSError as error:
        cpu = str(error).replace(" ", "_")
    tell(cpu)

signal.signal(signal.SIGUSR1, again)
tell("ready")
while True:
    signal.pause()
"""

# A's workload and its check after each return: the tmpfs file's hash, the holder's own
# re-hash, the CPUs online, the CPU the holder ran on pinned to CPU 1, and the kernel
# log's complaints. MD5, not SHA-256: nothing here is adversarial, and under TCG it
# takes half the time (1.3 s for a 64 MiB file on i386, 2.5 s with sha256sum).
A_PRELUDE = """#!/bin/sh
token=@TOKEN@
dd if=/dev/urandom of=/tmp/blob bs=1M count=32 2>/dev/null
echo "BLOB start $(md5sum /tmp/blob | cut -d ' ' -f 1)"
mkfifo /tmp/holder.fifo
python3 /boot/holder.py & holder=$!
read -r ready < /tmp/holder.fifo
echo "A-UPTIME before $(cut -d ' ' -f 1 /proc/uptime) $(cat /proc/sys/kernel/random/boot_id)"
echo "A-IOMEM"; grep 'System RAM' /proc/iomem | grep -v '^ '; echo "A-IOMEM-END"
python3 -c "import fcntl, socket, struct
fcntl.ioctl(socket.socket(socket.AF_UNIX), 0x8914, struct.pack('16sH22x', b'dummy0', 1))"
echo "A-NET start $(cat /sys/class/net/dummy0/flags)"
check() {
    echo "A-NET $1 $(cat /sys/class/net/dummy0/flags)"
    echo "BLOB $1 $(md5sum /tmp/blob | cut -d ' ' -f 1)"
    kill -USR1 $holder; read -r pinned < /tmp/holder.fifo
    echo "A-STATE $1 cpus=$(cat /sys/devices/system/cpu/online) pinned=$pinned \\
token=$token complaints=$(dmesg | grep -c -E 'BUG|Oops|WARNING|Call Trace')"
}
jump() {
    khib jump --kernel /boot/bzImage --initrd /boot/initrd --window @WINDOW@ "$@"
}
""".replace("@WINDOW@", WINDOW)


def a_script(token: str, body: str) -> str:
    """A's script: the workload, then ``body`` (which calls ``check LABEL`` after returns)."""
    return A_PRELUDE.replace("@TOKEN@", token) + body


def a_initrd(target: Target, root: Path, script: str, b_files: dict[str, bytes],
             other_b: dict[str, dict[str, bytes]] | None = None) -> Path:
    """A's initrd: the default image with the kernel, B's initrd (/boot/initrd, with
    ``b_files``) and A's script in /boot; ``other_b``: more B initrds by name, each the
    default image with its own files."""
    data = target.image.read_bytes()
    b_initrd = appended(data, b_files, root) if b_files else data
    more = {f"boot/{name}": appended(data, files, root)
            for name, files in (other_b or {}).items()}
    path = root / "a-initrd"
    path.write_bytes(appended(data, {"boot/bzImage": target.kernel.read_bytes(),
                                     "boot/initrd": b_initrd, "boot/holder.py": HOLDER_PY.encode(),
                                     "boot/a.sh": script.encode(), **more}, root))
    return path


def states(console: str) -> dict[str, tuple[str, str, str, str, int]]:
    """Each check A printed: label -> (blob hash, holder hash, CPUs online, the CPU a task
    pinned to CPU 1 ran on, complaints)."""
    blobs = dict(re.findall(r"BLOB (\S+) ([0-9a-f]{32})", console))
    holders = re.findall(r"HOLDER (?:start|again) ([0-9a-f]{32})", console)
    found = {}
    for index, match in enumerate(re.finditer(
            r"A-STATE (\S+) cpus=(\S+) pinned=(\S+) token=\S+ complaints=(\d+)", console)):
        label = match[1]
        found[label] = (blobs.get(label, ""), holders[index + 1] if index + 1 < len(holders)
                        else "", match[2], match[3], int(match[4]))
    return found


def assert_a_intact(console: str, labels: list[str], cpus: int = CPUS) -> None:
    """After every return A's file and process hash as before, all CPUs are online (a task
    pinned to the second runs there), its network interface is up as it was, A's kernel
    log is clean."""
    nets = dict(re.findall(r"A-NET (\S+) (0x[0-9a-f]+)", console))
    assert int(nets.get("start", "0"), 16) & 1, "A's dummy0 was not up before any jump"
    blob_start = re.search(r"BLOB start ([0-9a-f]{32})", console)
    holder_start = re.search(r"HOLDER start ([0-9a-f]{32})", console)
    assert blob_start and holder_start, console[-4000:]
    found = states(console)
    for label in labels:
        assert label in found, f"A never checked after {label!r}\n{console[-6000:]}"
        blob, holder, online, pinned, complaints = found[label]
        assert blob == blob_start[1], f"{label}: the tmpfs file changed"
        assert holder == holder_start[1], f"{label}: the process's memory changed"
        assert online == f"0-{cpus - 1}", f"{label}: CPUs online {online}"
        assert pinned == "1", f"{label}: a task pinned to CPU 1: {pinned}"
        assert complaints == 0, f"{label}: A's kernel log complains\n{console[-6000:]}"
        assert int(nets.get(label, "0"), 16) & 1, f"{label}: dummy0 is down ({nets.get(label)})"


def a_ram(console: str) -> list[tuple[int, int]]:
    """A's top-level System RAM ranges, as A printed them: (start, end exclusive)."""
    block = console.split("A-IOMEM\n", 1)[1].split("A-IOMEM-END", 1)[0]
    return [(int(a, 16), int(b, 16) + 1)
            for a, b in re.findall(r"([0-9a-f]+)-([0-9a-f]+) : System RAM", block)]


def resume_boot(target: Target, image: Path, vda: str | Path, memory: int = MEMORY,
                append: str = ONE_CPU, expect: str = "khib: run exited 0",
                cpus: int = CPUS) -> str:
    """Boot the khib kernel and ``image`` with khib.resume=/dev/vda; the console. The
    machine is A's: its key disk is attached too (the firmware's memory map depends on
    the devices)."""
    key_disk = Path(str(vda).rsplit(":", 1)[-1]).with_name("vdb.img")
    result = khib("boot", "-c", target.config, "--kernel", target.kernel, "--image",
                  image, "--memory", memory, "--cpus", cpus, "--disk", vda, "--disk", key_disk,
                  "--append", f"khib.resume=/dev/vda {append}", "--run", NORMAL,
                  "--expect", expect, "--timeout", 900)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr
    return result.stdout


def copy(vda: Path, name: str) -> Path:
    """A sparse copy of the hibernation disk, for a boot that changes it."""
    dest = vda.with_name(name)
    subprocess.run(["cp", "--sparse=always", vda, dest], check=True)
    return dest


def refused(target: Target, keyed: Path, vda: Path, why: str, attached: str = "",
            **boot: object) -> None:
    """A resume boot that refuses the image on ``vda`` (attached as it is, or as
    ``attached`` says), sets it aside and boots normally; nothing was written into
    memory."""
    console = resume_boot(target, keyed, attached or vda, **boot)
    line = re.search(rf"khib: not resuming: {why}.* \(the image on /dev/vda is set aside\)",
                     console)
    assert line, console[-4000:]
    assert "NORMAL-2-BOOT" in console and "entering it" not in console, console[-4000:]
    assert head(vda, 4) == fmt.ASIDE_MAGIC  # a later boot will not resume it


def head(disk: Path, size: int, at: int = 0) -> bytes:
    """``size`` bytes of a disk at ``at``, without reading the rest of it."""
    with disk.open("rb") as handle:
        handle.seek(at)
        return handle.read(size)

