#!/usr/bin/env python3
"""Hibernation benchmark: the kernel's own (swsusp) against khib, side by side.

The same kernel (khib's, x86_64 or i386: HIBERNATION=y, SWAP=y), the same QEMU machine
(TCG, 2 CPUs, the same memory, one raw virtio disk of the same size), the same initrd and
the same A: a 64 MiB random tmpfs file, a process holding 32 MiB of random data, 160 MiB
written to tmpfs and deleted, a token in a shell variable. A is hibernated and resumed by

  swsusp  mkswap and swapon on the disk, ``resume=/dev/vda`` on both command lines,
          ``echo disk > /sys/power/state`` (the kernel's default compression: LZO), the
          kernel powers off; the next boot's kernel finds the image and resumes A
  khib    ``khib hibernate --device /dev/vda`` (B saves A in LZ4 blocks, seals it, powers
          off); the next boot with ``khib.resume=/dev/vda`` checks it, restores it in B's
          window and enters A

and both resumes are checked: the file and the process hash as before, the token is the
same. For each: seconds from the hibernate command to the end of the QEMU process,
seconds from the start of the second QEMU process to A's resumed line, bytes written to the
disk (allocated in its sparse file) and read at resume (QEMU's own block statistics).
Each figure is the median of --reps runs; the ratios are khib over swsusp, from this run.
Console lines are timestamped on the host, so that each run also says where its time went.

Run: make bench, or .venv/bin/python bench/hibernate.py [--reps 3] [--memory 512 2048]
     [--arch x86_64] [--write-results]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.helpers import DEFAULT_CONFIG, X86_64_CONFIG, assert_ok, khib  # noqa: E402
from tests.hibernation_peers import CPUS, METHODS, Run, a_initrd, hibernate_once, when  # noqa: E402

# Where each method's time goes: console lines, in the order they appear, whose host
# times split the save (from HIB-GO) and the resume (from the start of QEMU).
SAVE_STEPS = {
    "swsusp": [("freeze and snapshot", "PM: Using"),
               ("compress and write", "PM: Image saving done"),
               ("power off", "reboot: Power down")],
    "khib": [("A: sync, load B, jump", "Linux version"), ("B boots", "khib: saving A"),
             ("B saves", "khib-save:"), ("seal, power off", "reboot: Power down")],
}
RESUME_STEPS = {
    "swsusp": [("firmware, kernel boot", "PM: Using"),
               ("read, decompress", "PM: Image loading done"),
               ("restore, thaw", "A-RESUMED")],
    "khib": [("firmware, kernel boot", "khib: khib"), ("first stage: check", "is whole"),
             ("load B, jump, B boots", "khib.stage=restore"),
             ("restore stage: write, verify", "khib-restore:"), ("enter A, thaw", "A-RESUMED")],
}


def steps(lines: list[tuple[float, str]], marks: list[tuple[str, str]], start: float,
          ) -> dict[str, float]:
    """Seconds of each step: from the previous mark (or ``start``) to its own line."""
    found, previous = {}, start
    for label, text in marks:
        at = when(lines, text, previous)
        if at is None:
            continue
        found[label], previous = at - previous, at
    return found


def saved_figures(first: list[tuple[float, str]]) -> tuple[float, float] | None:
    """khib-save's MiB scanned and seconds, from B's line."""
    line = next((line for _, line in first if "khib-save:" in line and "MiB scanned" in line), "")
    found = re.search(r"(\d+) MiB scanned.* in ([\d.]+) s", line)
    return (float(found[1]), float(found[2])) if found else None


def built(config: Path, work: Path) -> tuple[Path, Path]:
    """The khib kernel and default image for ``config`` (khib-build's cache makes these
    quick after the first time)."""
    for what in ("kernel", "rootfs"):
        assert_ok(khib(what, "-c", config, "-o", work / what, timeout=3600))
    return work / "kernel" / "bzImage", work / "rootfs" / "rootfs.gz"


def calibration() -> float:
    """Seconds the host takes for a fixed piece of CPU work (SHA-256 of 256 MiB in
    Python's C code): the machine's speed at the time of the run."""
    import hashlib
    started, data = time.monotonic(), bytes(1 << 20)
    digest = hashlib.sha256()
    for _ in range(256):
        digest.update(data)
    return time.monotonic() - started


def table(results: dict[tuple[int, str], list[Run]], arch: str, reps: int) -> str:
    """The markdown tables: medians per memory size and method, ratios, steps."""
    mib = 1 << 20
    out = ["| A's memory | method | save s | resume s | written MiB | read at resume MiB |",
           "|---|---|---|---|---|---|"]
    ratios = ["| A's memory | save | resume | written | read |", "|---|---|---|---|---|"]
    for memory in sorted({memory for memory, _ in results}):
        medians = {}
        for method in METHODS:
            runs = results.get((memory, method))
            if not runs:
                continue
            medians[method] = [statistics.median(getattr(run, name) for run in runs)
                               for name in ("save_s", "resume_s", "written", "read")]
            save, resume, written, read = medians[method]
            out.append(f"| {memory} MiB | {method} | {save:.1f} | {resume:.1f} | "
                       f"{written / mib:.0f} | {read / mib:.0f} |")
        if len(medians) == 2:
            ratio = [k / s for k, s in zip(medians["khib"], medians["swsusp"], strict=True)]
            ratios.append(f"| {memory} MiB | " + " | ".join(f"{r:.2f}" for r in ratio) + " |")
    lines = [f"{arch}, {CPUS} CPUs, median of {reps}:", "", *out, "",
             "khib / swsusp (below 1: khib is the faster or smaller):", "", *ratios, ""]
    for memory, method in sorted(results):
        runs = results[(memory, method)]
        save = [steps(run.first, SAVE_STEPS[method], when(run.first, "HIB-GO") or 0.0)
                for run in runs]
        resume = [steps(run.second, RESUME_STEPS[method], 0.0) for run in runs]
        parts = [f"{label} {statistics.median(step.get(label, 0.0) for step in save):.1f}"
                 for label, _ in SAVE_STEPS[method]]
        back = [f"{label} {statistics.median(step.get(label, 0.0) for step in resume):.1f}"
                for label, _ in RESUME_STEPS[method]]
        lines.append(f"- {method}, {memory} MiB: save: {', '.join(parts)} s; resume: "
                     f"{', '.join(back)} s")
        rates = [figures for run in runs if (figures := saved_figures(run.first))]
        if rates:
            scanned = statistics.median(scan for scan, _ in rates)
            seconds = statistics.median(took for _, took in rates)
            lines.append(f"  - khib-save in B: {scanned:.0f} MiB scanned in {seconds:.1f} s "
                         f"({scanned / seconds:.0f} MiB/s)")
    return "\n".join(lines)


def write_block(path: Path, name: str, block: str) -> None:
    """``block`` between the file's markers for ``name``, in place of what was between
    them (appended at the end of the file the first time)."""
    begin, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    text, marked = path.read_text(), f"{begin}\n{block}\n{end}"
    if begin in text:
        text = text[:text.index(begin)] + marked + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + marked + "\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--memory", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--arch", choices=["x86_64", "i386"], default="x86_64")
    parser.add_argument("--work", type=Path, help="keep the kernel, image and logs here")
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    parser.add_argument("--no-results", action="store_true",
                        help="print the tables only, without writing them to bench/RESULTS.md")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="khib-bench-hibernate-"))
    work.mkdir(parents=True, exist_ok=True)
    kernel, image = built(X86_64_CONFIG if args.arch == "x86_64" else DEFAULT_CONFIG, work)
    initrds = {method: a_initrd(kernel, image, method, work) for method in args.methods}
    before = calibration()
    results: dict[tuple[int, str], list[Run]] = {}
    for rep in range(args.reps):  # interleaved, so that a slower minute hits both methods
        for memory in args.memory:
            for method in args.methods:
                run = hibernate_once(method, memory, kernel, initrds[method], work)
                results.setdefault((memory, method), []).append(run)
                print(f"rep {rep + 1} {method} {memory} MiB: save {run.save_s:.1f} s, "
                      f"resume {run.resume_s:.1f} s, written {run.written >> 20} MiB, "
                      f"read {run.read >> 20} MiB", flush=True)
                for label, lines in (("first", run.first), ("second", run.second)):
                    log = work / f"{method}-{memory}-{rep}-{label}.log"
                    log.write_text("".join(f"{at:8.2f} {line}\n" for at, line in lines))
    after = calibration()
    block = "\n".join([
        f"Measured {time.strftime('%Y-%m-%d', time.gmtime())} by `bench/hibernate.py "
        f"--arch {args.arch} --memory {' '.join(map(str, args.memory))} --reps {args.reps}`, "
        f"QEMU TCG on a {os.cpu_count()}-core host without KVM. The machine's speed: SHA-256 "
        f"of 256 MiB in Python took {before:.2f} s before the runs and {after:.2f} s after.",
        "", table(results, args.arch, args.reps)])
    print(block)
    if not args.no_results:
        write_block(REPO / "bench" / "RESULTS.md", f"hibernate {args.arch}", block)
    if args.json:
        args.json.write_text(json.dumps(
            {f"{memory}-{method}": [[run.save_s, run.resume_s, run.written, run.read]
                                    for run in runs]
             for (memory, method), runs in results.items()}, indent=1))


if __name__ == "__main__":
    main()
