#!/usr/bin/env python3
"""Save benchmark: khib-save and khib-restore against lz4 -1, zstd -1 -T0 and cat.

The memory is real: an x86_64 khib guest (QEMU TCG, 1 GiB, the kernel and default image
khib-build builds) holds a 64 MiB random tmpfs file and a 32 MiB random process, has read
its programs and Python library into the page cache, and has dirtied 384 MiB and freed it. It
jumps to B, which copies all of A's RAM through /dev/mem to a disk, byte for byte at its
physical address, with what khib save would be told (A's RAM ranges, B's own, A's
VMCOREINFO note, control page and "Kernel code"). On the host, against that 1 GiB file:

  khib-save      the file standing for /dev/mem, as in B: free pages walked and left
                 out, zero pages recorded, the rest in LZ4 blocks, CRC-32s, the seal
  khib-restore   the image checked whole, written back into a 1 GiB tmpfs file standing
                 for RAM (its pages present, as RAM's are), verified
  lz4 -1, zstd -1 -T0, cat > /dev/null
                 on the stored bytes: the data pages khib-save stored, as one file
                 (decoded from the image with python-lz4); and lz4 -d, zstd -d back

Each figure is the median of --reps runs: wall seconds, MiB/s (khib-save: of the memory
it went through; the peers: of the stored bytes), peak RSS (GNU time), output size.

Run: make bench, or .venv/bin/python bench/save.py [--reps 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from pack import run  # noqa: E402

from tests.guest import Target, a_initrd, a_script, disk  # noqa: E402
from tests.helpers import X86_64_CONFIG, assert_ok, khib, loads, unpacked  # noqa: E402

MEMORY = 1024  # MiB of the guest
A_BODY = """
find /usr /bin /sbin -type f -exec cat {} + > /dev/null
dd if=/dev/urandom of=/tmp/dirty bs=1M count=384 2>/dev/null; rm /tmp/dirty
jump --b-run 'python3 /boot/dump.py /dev/vda /dev/vdb'
echo "A-END $?"
"""
# In B: A's RAM, byte for byte at its physical address, and what khib save would be told.
DUMP_PY = """import json, mmap, os, re, sys
ranges = open("/khib/ranges").read()
mem, out = os.open("/dev/mem", os.O_RDONLY), os.open(sys.argv[1], os.O_WRONLY)
for start, end in re.findall(r"([0-9a-f]+)-([0-9a-f]+) : System RAM", ranges):
    at, end = int(start, 16), int(end, 16) + 1
    while at < end:
        length = min(1 << 20, end - at)
        view = mmap.mmap(mem, length, mmap.MAP_SHARED, mmap.PROT_READ, offset=at)
        os.pwrite(out, view[:], at)
        view.close()
        at += length
os.fsync(out)
entry = re.search(r"kexec_jump_back_entry=(\\S+)", open("/proc/cmdline").read())[1]
told = {"ranges": ranges, "iomem": open("/proc/iomem").read(), "entry": entry,
        "jump": json.load(open("/khib/jump.json"))}
data = json.dumps(told).encode()
os.pwrite(os.open(sys.argv[2], os.O_WRONLY), len(data).to_bytes(8, "little") + data, 0)
print("B-DUMPED")
"""


def capture(work: Path) -> tuple[Path, dict[str, object]]:
    """A's memory as B saw it (a 1 GiB file), and what khib save would be told."""
    memory, told = work / "memory.raw", work / "told.json"
    if memory.exists() and told.exists():
        return memory, json.loads(told.read_text())
    for config, what in ((X86_64_CONFIG, "kernel"), (X86_64_CONFIG, "rootfs")):
        assert_ok(khib(what, "-c", config, "-o", work / what, timeout=3600))
    target = Target("x86_64", X86_64_CONFIG, work / "rootfs" / "rootfs.gz",
                    work / "kernel" / "bzImage")
    root = work / "guest"
    root.mkdir(exist_ok=True)
    initrd = a_initrd(target, root, a_script("bench", A_BODY), {"boot/dump.py": DUMP_PY.encode()})
    vda, vdb = disk(work / "vda.img", MEMORY + 64), disk(work / "vdb.img", 1)
    result = khib("boot", "-c", X86_64_CONFIG, "--kernel", target.kernel, "--image", initrd,
                  "--memory", MEMORY, "--cpus", 2, "--disk", vda, "--disk", vdb,
                  "--run", "/boot/a.sh", "--expect", "A-END", "--timeout", 1800)
    if result.returncode or "B-DUMPED" not in result.stdout:
        raise SystemExit(result.stdout[-4000:] + result.stderr)
    raw = vdb.read_bytes()
    told.write_bytes(raw[8:8 + int.from_bytes(raw[:8], "little")])
    vda.rename(memory)
    return memory, json.loads(told.read_text())


def save_command(core: Path, memory: Path, told: dict[str, object], work: Path) -> str:
    """khib-save as khib save runs it in B, on the captured memory."""
    (work / "ranges").write_text(str(told["ranges"]))
    (work / "b-iomem").write_text(str(told["iomem"]))
    jump = told["jump"]
    address, length = jump["vmcoreinfo"]
    q = shlex.quote
    return (f"{q(str(core / 'khib-save'))} --mem {q(str(memory))}"
            f" --ranges {q(str(work / 'ranges'))}"
            f" --exclude {q(str(work / 'b-iomem'))} --vmcoreinfo {address:#x}:{length:#x}"
            f" --control-page {int(str(told['entry']), 16) & ~0xFFF:#x}"
            f" --kernel-code {jump['kernel_code']:#x} -o {q(str(work / 'image'))} > /dev/null")


def stored_bytes(image: Path, out: Path) -> None:
    """The data pages the image stores, decoded with python-lz4, as one file."""
    data = image.read_bytes()
    with out.open("wb") as sink:
        for load in loads(image)[0]:
            if load.filesz:
                sink.write(unpacked(data, load))


def median(command: str, reps: int) -> tuple[float, int]:
    """Median wall seconds and peak RSS (KiB) over reps runs."""
    runs = [run(command) for _ in range(reps)]
    return statistics.median(r[0] for r in runs), max(r[2] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--work", type=Path, help="keep the capture and outputs here")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="khib-bench-save-"))
    work.mkdir(parents=True, exist_ok=True)
    memory, told = capture(work)
    core = work / "core"
    subprocess.run(["cp", "-r", str(REPO / "recipes" / "khib-core" / "src"), str(core)], check=True)
    subprocess.run(["make", "-s", "-C", str(core), "CC=gcc", "CFLAGS=-O2"], check=True)
    q = shlex.quote
    # The restore's target stands for RAM: a tmpfs file (a disk file's page cache costs
    # more to write through a shared mapping than memory does).
    image, stored = work / "image", work / "stored.raw"
    target = Path("/dev/shm") / f"khib-bench-target-{os.getpid()}"
    save_wall, save_rss = median(save_command(core, memory, told, work), args.reps)
    stored_bytes(image, stored)
    with target.open("wb") as sparse:
        sparse.truncate(memory.stat().st_size)
    restore = (f"{q(str(core / 'khib-restore'))} {q(str(image))} --mem {q(str(target))}"
               " > /dev/null")
    run(restore)  # once first: the target's pages exist, as RAM does
    restore_wall, restore_rss = median(restore, args.reps)
    target.unlink()
    scanned = sum(s.memsz for s in loads(image)[0]) >> 20
    mib = stored.stat().st_size / (1 << 20)
    rows = [("khib-save", save_wall, save_rss, image.stat().st_size, scanned),
            ("khib-restore", restore_wall, restore_rss, 0, scanned)]
    peers = {"lz4 -1": (f"lz4 -1 -q -c {q(str(stored))} > {q(str(work / 's.lz4'))}", "s.lz4"),
             "zstd -1 -T0": (f"zstd -1 -T0 -q -c {q(str(stored))} > {q(str(work / 's.zst'))}",
                             "s.zst"),
             "cat": (f"cat {q(str(stored))} > /dev/null", ""),
             "lz4 -d": (f"lz4 -d -q -c {q(str(work / 's.lz4'))} > /dev/null", ""),
             "zstd -d": (f"zstd -d -q -c {q(str(work / 's.zst'))} > /dev/null", "")}
    for name, (command, output) in peers.items():
        wall, rss = median(command, args.reps)
        rows.append((name, wall, rss, (work / output).stat().st_size if output else 0, mib))
    print(f"memory {memory.stat().st_size >> 20} MiB; khib went through {scanned} MiB "
          f"(A's RAM less B's), stored the data pages: {mib:.0f} MiB; median of {args.reps}")
    print(f"{'tool':14} {'wall s':>8} {'MiB/s':>8} {'RSS MiB':>8} {'output MiB':>11}")
    for name, wall, rss, size, through in rows:
        print(f"{name:14} {wall:8.2f} {through / wall:8.0f} {rss / 1024:8.1f} "
              f"{size / (1 << 20) if size else 0:11.1f}")
    times = {name: wall for name, wall, *_ in rows}
    sizes = {name: size for name, _, _, size, _ in rows}
    print(f"ratios: khib-save / lz4 -1 wall {times['khib-save'] / times['lz4 -1']:.2f}, "
          f"khib-restore / lz4 -1 wall {times['khib-restore'] / times['lz4 -1']:.2f}, "
          f"khib-restore / lz4 -d wall {times['khib-restore'] / times['lz4 -d']:.2f}, "
          f"stored size / zstd -1 {sizes['khib-save'] / sizes['zstd -1 -T0']:.2f}, "
          f"/ lz4 -1 {sizes['khib-save'] / sizes['lz4 -1']:.2f}")


if __name__ == "__main__":
    main()
