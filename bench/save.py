#!/usr/bin/env python3
"""Save benchmark: khib-save and khib-restore against lz4 -1, zstd -1 -T0 and cat.

The memory is real: an x86_64 khib guest (QEMU TCG, 1 GiB, the kernel and default image
khib-build builds) holds a 64 MiB random tmpfs file and a 32 MiB random process, has read
its programs and Python library into the page cache, and has dirtied 384 MiB and freed it. It
jumps to B, which copies all of A's RAM through /dev/mem to a disk, byte for byte at its
physical address, with what khib save would be told (A's RAM ranges, B's own, A's
VMCOREINFO note, control page and "Kernel code"). On the host, against that 1 GiB file:

  khib-save      the file standing for /dev/mem, as in B: free pages walked and left
                 out, zero pages recorded, the rest in LZ4 blocks, CRC-32s, the seal;
                 on every CPU, and with --threads 1 (B's one CPU)
  khib-restore   --check --digests-out: the resume's first stage, the image checked
                 whole; --digests: its restore stage, written back into a 1 GiB tmpfs
                 file standing for RAM (its pages present, as RAM's are) with those
                 digests, verified; and the whole of it in one run (check, write, verify)
  lz4 -1, zstd -1 -T0, cat > /dev/null
                 on the stored bytes: the data pages khib-save stored, as one file
                 (decoded from the image with python-lz4); and lz4 -d, zstd -d back

Each figure is the median of --reps runs, each rep running every command in turn (another
load on the machine weighs on them alike): wall seconds, MiB/s (khib: of the memory it
went through; the peers: of the stored bytes), CPU seconds (user + system), peak RSS (GNU
time), output size. Then
what each check costs on the same bytes (a microbenchmark of the core's own functions:
CRC-32 over the stored memory, SHA-256 over the stored blocks, the zero test over the
memory), as the host runs them and as built with -DKHIB_PORTABLE (the tables and plain C
of a CPU without PCLMULQDQ and the SHA extensions: QEMU's TCG, where B runs). Last, peak
RSS on a memory twice the size (the capture twice over, no free pages known): it must
not grow with it.

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
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from pack import run  # noqa: E402
from results import write_block  # noqa: E402

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


# The checks' cost: the core's own functions over the same bytes, the best of 5 runs.
CHECKS_C = r"""
#define _GNU_SOURCE
#include "khib-core.h"
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>

static const unsigned char *whole(const char *path, size_t *size)
{
    struct stat st;
    int fd = open(path, O_RDONLY);
    if (fd < 0 || fstat(fd, &st) < 0)
        exit(1);
    *size = (size_t)st.st_size;
    return mmap(NULL, *size, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
}

static double best(int what, const unsigned char *at, size_t size, volatile unsigned *sink)
{
    double fastest = 1e9;
    for (int rep = 0; rep < 5; rep++) {
        double started = khib_seconds();
        if (what == 0) {
            *sink = khib_crc32(0, at, size);
        } else if (what == 1) {
            struct khib_sha256 sha;
            unsigned char digest[32];
            khib_sha256_init(&sha);
            khib_sha256_update(&sha, at, size);
            khib_sha256_final(&sha, digest);
            *sink = digest[0];
        } else {
            *sink = (unsigned)khib_is_zero(at, size);
        }
        double took = khib_seconds() - started;
        fastest = took < fastest ? took : fastest;
    }
    return fastest;
}

int main(int argc, char **argv)
{
    size_t stored, image, zeros;
    const unsigned char *s = whole(argv[1], &stored), *i = whole(argv[2], &image);
    const unsigned char *z = whole(argv[3], &zeros);
    volatile unsigned sink;
    (void)argc;
    printf("%zu %.4f %zu %.4f %zu %.4f\n", stored, best(0, s, stored, &sink),
           image - 4096, best(1, i + 4096, image - 4096, &sink),
           zeros, best(2, z, zeros, &sink));
    return 0;
}
"""


def checks(core: Path, work: Path, image: Path, stored: Path, zeros: Path) -> list[str]:
    """What each check costs over the bytes it covers, as built here and -DKHIB_PORTABLE."""
    (work / "checks.c").write_text(CHECKS_C)
    lines = []
    for name, flags in (("host", []), ("portable", ["-DKHIB_PORTABLE"])):
        binary = work / f"checks-{name}"
        subprocess.run(["gcc", "-O2", "-D_FILE_OFFSET_BITS=64", *flags, "-I", str(core),
                        "-o", str(binary), str(work / "checks.c"), str(core / "checksum.c"),
                        str(core / "sha256.c"), str(core / "seal.c"), str(core / "io.c")],
                       check=True)
        out = subprocess.run([str(binary), str(stored), str(image), str(zeros)],
                             capture_output=True, text=True, check=True).stdout.split()
        (crc_bytes, crc_s, sha_bytes, sha_s, zero_bytes, zero_s) = map(float, out)
        for what, size, seconds in (("CRC-32 of the stored memory", crc_bytes, crc_s),
                                    ("SHA-256 of the stored blocks", sha_bytes, sha_s),
                                    ("zero test of zero memory", zero_bytes, zero_s)):
            lines.append(f"  {name:8} {what:30} {size / (1 << 20):7.0f} MiB {seconds:7.3f} s "
                         f"{size / (1 << 20) / seconds:8.0f} MiB/s")
    return lines


def doubled(memory: Path, work: Path) -> tuple[Path, Path]:
    """The capture twice over, the second copy above the first: a memory twice the size."""
    twice, ranges = work / "memory2.raw", work / "ranges2"
    size = memory.stat().st_size
    if not twice.exists() or twice.stat().st_size != 2 * size:
        subprocess.run(f"cat {shlex.quote(str(memory))} {shlex.quote(str(memory))} "
                       f"> {shlex.quote(str(twice))}", shell=True, check=True)
    lines = (work / "ranges").read_text().split("\n")
    ranges.write_text("\n".join(line for line in lines if line) + "\n" + "".join(
        f"{int(a, 16) + size:08x}-{int(b, 16) + size:08x} : System RAM\n"
        for a, b in (line.split(" ")[0].split("-") for line in lines if line)))
    return twice, ranges


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--work", type=Path, help="keep the capture and outputs here")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="khib-bench-save-"))
    work.mkdir(parents=True, exist_ok=True)
    memory, told = capture(work)
    core = work / "core"
    # -T: into core itself when an earlier run left it (else a stale core ran)
    subprocess.run(["cp", "-rT", str(REPO / "recipes" / "khib-core" / "src"), str(core)],
                   check=True)
    subprocess.run(["make", "-s", "-C", str(core), "CC=gcc", "CFLAGS=-O2"], check=True)
    q = shlex.quote
    # The restore's target stands for RAM: a tmpfs file (a disk file's page cache costs
    # more to write through a shared mapping than memory does).
    image, stored, digests = work / "image", work / "stored.raw", work / "digests"
    target = Path("/dev/shm") / f"khib-bench-target-{os.getpid()}"
    save = save_command(core, memory, told, work)
    one = save.replace(" > /dev/null", " --threads 1 > /dev/null")
    run(save)  # once first: the image the others read
    stored_bytes(image, stored)
    with target.open("wb") as sparse:
        sparse.truncate(memory.stat().st_size)
    restore = f"{q(str(core / 'khib-restore'))} {q(str(image))}"
    check = f"{restore} --check --digests-out {q(str(digests))} > /dev/null"
    staged = f"{restore} --mem {q(str(target))} --digests {q(str(digests))} > /dev/null"
    full = f"{restore} --mem {q(str(target))} > /dev/null"
    run(full)  # once first: the target's pages exist, as RAM does
    run(f"lz4 -1 -q -c {q(str(stored))} > {q(str(work / 's.lz4'))}")
    run(f"zstd -1 -T0 -q -c {q(str(stored))} > {q(str(work / 's.zst'))}")
    segments = loads(image)[0]
    scanned = sum(s.memsz for s in segments) >> 20
    mib = stored.stat().st_size / (1 << 20)
    # (name, command, output, MiB gone through); every rep runs each in turn, so that
    # another load on the machine weighs on them alike.
    table = [("khib-save", save, "image", scanned), ("  --threads 1", one, "image", scanned),
             ("restore check", check, "", scanned), ("restore stage", staged, "", scanned),
             ("khib-restore", full, "", scanned),
             ("lz4 -1", f"lz4 -1 -q -c {q(str(stored))} > {q(str(work / 's.lz4'))}", "s.lz4",
              mib),
             ("zstd -1 -T0", f"zstd -1 -T0 -q -c {q(str(stored))} > {q(str(work / 's.zst'))}",
              "s.zst", mib),
             ("cat", f"cat {q(str(stored))} > /dev/null", "", mib),
             ("lz4 -d", f"lz4 -d -q -c {q(str(work / 's.lz4'))} > /dev/null", "", mib),
             ("zstd -d", f"zstd -d -q -c {q(str(work / 's.zst'))} > /dev/null", "", mib)]
    runs: dict[str, list[tuple[float, float, int]]] = {name: [] for name, *_ in table}
    for _ in range(args.reps):
        for name, command, _, _ in table:
            runs[name].append(run(command))
    rows = [(name, statistics.median(r[0] for r in runs[name]), max(r[2] for r in runs[name]),
             (work / output).stat().st_size if output else 0, through)
            for name, _, output, through in table]
    cpu = {name: statistics.median(r[1] for r in runs[name]) for name in runs}
    # The zero test's bytes: as many zeros as the image's zero and free runs hold.
    zeros = Path("/dev/shm") / f"khib-bench-zeros-{os.getpid()}"
    with zeros.open("wb") as sink:
        for _ in range(sum(s.memsz for s in segments if not s.filesz) >> 20):
            sink.write(bytes(1 << 20))
    costs = checks(core, work, image, stored, zeros)
    zeros.unlink()
    # Peak RSS on twice the memory (no --vmcoreinfo: the copy's free pages are stored).
    twice, ranges2 = doubled(memory, work)
    image2 = work / "image2"
    big_save = (f"{q(str(core / 'khib-save'))} --mem {q(str(twice))} --ranges {q(str(ranges2))}"
                f" -o {q(str(image2))} > /dev/null")
    big_target = target.with_name(target.name + "-2")
    with big_target.open("wb") as sparse:
        sparse.truncate(twice.stat().st_size)
    big_full = f"{q(str(core / 'khib-restore'))} {q(str(image2))} --mem {q(str(big_target))}"
    small = [("khib-save", save, memory), ("khib-restore", full, memory)]
    big = [run(big_save), run(f"{big_full} > /dev/null")]
    big_target.unlink()
    target.unlink()
    times = {name: wall for name, wall, *_ in rows}
    sizes = {name: size for name, _, _, size, _ in rows}
    out = [f"memory {memory.stat().st_size >> 20} MiB; khib went through {scanned} MiB "
           f"(A's RAM less B's), stored the data pages: {mib:.0f} MiB; median of {args.reps}; "
           f"{os.cpu_count()} CPUs",
           f"{'tool':14} {'wall s':>8} {'CPU s':>6} {'MiB/s':>8} {'RSS MiB':>8} "
           f"{'output MiB':>11}"]
    out += [f"{name:14} {wall:8.2f} {cpu[name]:6.2f} {through / wall:8.0f} "
            f"{rss / 1024:8.1f} {size / (1 << 20) if size else 0:11.1f}"
            for name, wall, rss, size, through in rows]
    out.append(f"ratios: khib-save / lz4 -1 wall {times['khib-save'] / times['lz4 -1']:.2f}, "
               f"restore stage / lz4 -d {times['restore stage'] / times['lz4 -d']:.2f}, "
               f"check + restore stage / lz4 -d "
               f"{(times['restore check'] + times['restore stage']) / times['lz4 -d']:.2f}, "
               f"khib-restore / lz4 -d wall {times['khib-restore'] / times['lz4 -d']:.2f}, "
               f"stored size / zstd -1 {sizes['khib-save'] / sizes['zstd -1 -T0']:.2f}, "
               f"/ lz4 -1 {sizes['khib-save'] / sizes['lz4 -1']:.2f}")
    out += ["what the checks cost, best of 5:", *costs]
    out.append(f"peak RSS on twice the memory ({twice.stat().st_size >> 20} MiB, image "
               f"{image2.stat().st_size >> 20} MiB):")
    out += [f"  {name:12} {rss / 1024:6.1f} MiB in {wall:.2f} s "
            f"(the capture: {dict((r[0], r[2]) for r in rows)[name] / 1024:.1f} MiB)"
            for (name, _, _), (wall, _, rss) in zip(small, big, strict=True)]
    print("\n".join(out))
    write_block("save", "\n".join([
        f"Measured {time.strftime('%Y-%m-%d', time.gmtime())} by `bench/save.py --reps "
        f"{args.reps}` on the host ({os.cpu_count()} CPUs, {cpu_model()}); the machine's "
        f"speed beside it: `lz4 -1` itself took {times['lz4 -1']:.2f} s in this run.",
        "", "```text", *out, "```"]))


def cpu_model() -> str:
    """The host CPU's name, as /proc/cpuinfo gives it."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


if __name__ == "__main__":
    main()
