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
sys.path.insert(0, str(REPO / "bench"))

from results import write_block  # noqa: E402

from tests.helpers import DEFAULT_CONFIG, X86_64_CONFIG, assert_ok, khib  # noqa: E402
from tests.hibernation_peers import CPUS, METHODS, Run, a_initrd, hibernate_once, when  # noqa: E402

# Where each method's time goes: console lines, in the order they appear, whose host
# times split the save (from HIB-GO) and the resume (from the start of QEMU). A line of a
# program that reports its own seconds (" in 4.3 s") also marks where that program
# started: (label, text, True) ends there, the next step at the line itself.
SAVE_STEPS = {
    "swsusp": [("freeze, snapshot", "PM: Using", False),
               ("compress, write", "PM: Image saving done", False),
               ("power off", "reboot: Power down", False)],
    "khib": [("A: khib, load B, jump", "Linux version", False),
             ("B: kernel boot", "Run /init", False),
             ("B: khib tools, boot area", "khib-save:", True),
             ("B: khib-save", "khib-save:", False),
             ("power off", "reboot: Power down", False)],
}
RESUME_STEPS = {
    "swsusp": [("firmware, kernel boot", "PM: Using", False),
               ("read, decompress, check", "PM: Image loading done", False),
               ("restore, thaw", "A-RESUMED", False)],
    "khib": [("firmware, kernel boot", "Run /init", False),
             ("first stage: khib tools, check", "is whole", False),
             ("load B, jump, B boots", "Run /init", False),
             ("restore stage: khib tools", "khib-restore:", True),
             ("restore stage: khib-restore", "khib-restore:", False),
             ("enter A, thaw", "A-RESUMED", False)],
}


def steps(lines: list[tuple[float, str]], marks: list[tuple[str, str, bool]], start: float,
          ) -> dict[str, float]:
    """Seconds of each step: from the previous mark (or ``start``) to its own line, or
    to where the program on that line started."""
    found, previous = {}, start
    for label, text, started in marks:
        after = previous if started else previous + 1e-6
        hit = next(((at, line) for at, line in lines if at >= after and text in line), None)
        if hit is None:
            continue
        at, line = hit
        if started:
            reported = re.search(r" in ([\d.]+) s", line)
            at -= float(reported[1]) if reported else 0.0
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


def table(results: dict[tuple[int, str], list[Run]], title: str, reps: int) -> str:
    """The markdown tables: medians per memory size and method, ratios, steps."""
    mib = 1 << 20
    out = ["| A's memory | method | save s | resume s | written MiB | read at resume MiB |",
           "|---|---|---|---|---|---|"]
    ratios = ["| A's memory | peer | save | resume | written | read |", "|---|---|---|---|---|---|"]
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
        for peer in (peer for peer in medians if "khib" in medians and peer != "khib"):
            ratio = [k / s for k, s in zip(medians["khib"], medians[peer], strict=True)]
            ratios.append(f"| {memory} MiB | {peer} | " + " | ".join(f"{r:.2f}" for r in ratio)
                          + " |")
    lines = [f"{title}, {CPUS} CPUs, median of {reps}:", "", *out, ""]
    if len(ratios) > 2:
        lines += ["khib / its peer (below 1: khib is the faster or smaller):", "", *ratios, ""]
    for memory, method in sorted(results):
        runs = results[(memory, method)]
        kind = method.split("-")[0]  # swsusp-lz4 takes swsusp's steps
        save = [steps(run.first, SAVE_STEPS[kind], when(run.first, "HIB-GO") or 0.0)
                for run in runs]
        resume = [steps(run.second, RESUME_STEPS[kind], 0.0) for run in runs]
        parts = [f"{label} {statistics.median(step.get(label, 0.0) for step in save):.1f}"
                 for label, *_ in SAVE_STEPS[kind]]
        back = [f"{label} {statistics.median(step.get(label, 0.0) for step in resume):.1f}"
                for label, *_ in RESUME_STEPS[kind]]
        lines.append(f"- {method}, {memory} MiB: save: {', '.join(parts)} s; resume: "
                     f"{', '.join(back)} s")
        rates = [figures for run in runs if (figures := saved_figures(run.first))]
        if rates:
            scanned = statistics.median(scan for scan, _ in rates)
            seconds = statistics.median(took for _, took in rates)
            lines.append(f"  - khib-save in B: {scanned:.0f} MiB scanned in {seconds:.1f} s "
                         f"({scanned / seconds:.0f} MiB/s)")
    return "\n".join(lines)


def measure(args: argparse.Namespace, work: Path) -> dict[str, object]:
    """Every run, each method and memory size in turn, rep after rep: their figures (kept
    in WORK/runs.json) and console logs (WORK/METHOD-MEMORY-REP-first.log, -second.log)."""
    kernel, image = built(args.config or (X86_64_CONFIG if args.arch == "x86_64"
                                          else DEFAULT_CONFIG), work)
    initrds = {method: a_initrd(kernel, image, method, work) for method in args.methods}
    before = calibration()
    runs: dict[str, list[list[float]]] = {}
    for rep in range(args.reps):  # interleaved, so that a slower minute hits both methods
        for memory in args.memory:
            for method in args.methods:
                run = hibernate_once(method, memory, kernel, initrds[method], work)
                runs.setdefault(f"{memory}-{method}", []).append(
                    [run.save_s, run.resume_s, run.written, run.read])
                print(f"rep {rep + 1} {method} {memory} MiB: save {run.save_s:.1f} s, "
                      f"resume {run.resume_s:.1f} s, written {run.written >> 20} MiB, "
                      f"read {run.read >> 20} MiB", flush=True)
                for label, lines in (("first", run.first), ("second", run.second)):
                    log = work / f"{method}-{memory}-{rep}-{label}.log"
                    log.write_text("".join(f"{at:8.2f} {line}\n" for at, line in lines))
    record = {"arch": args.arch, "memory": args.memory, "reps": args.reps,
              "config": str(args.config.relative_to(REPO)) if args.config else "",
              "date": time.strftime("%Y-%m-%d", time.gmtime()),
              "calibration": [before, calibration()], "runs": runs}
    (work / "runs.json").write_text(json.dumps(record, indent=1))
    return record


def from_logs(record: dict[str, object], work: Path) -> dict[tuple[int, str], list[Run]]:
    """The runs of ``record``, with their console lines read back from WORK's logs."""
    def lines(path: Path) -> list[tuple[float, str]]:
        return [(float(line[:8]), line[9:]) for line in path.read_text().splitlines()]
    results: dict[tuple[int, str], list[Run]] = {}
    for key, figures in record["runs"].items():
        memory, method = key.split("-", 1)
        results[(int(memory), method)] = [
            Run(*figure, lines(work / f"{method}-{memory}-{rep}-first.log"),
                lines(work / f"{method}-{memory}-{rep}-second.log"))
            for rep, figure in enumerate(figures)]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--memory", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--arch", choices=["x86_64", "i386"], default="x86_64")
    parser.add_argument("--config", type=lambda text: Path(text).resolve(),
                        help="A's kernel and image from this config (default: the arch's "
                             "khib config); swsusp-lz4 needs a 6.9+ kernel with CRYPTO_LZ4")
    parser.add_argument("--work", type=Path, help="keep the kernel, image, figures and logs here")
    parser.add_argument("--tables-only", action="store_true",
                        help="run nothing: the tables again from --work's figures and logs")
    parser.add_argument("--no-results", action="store_true",
                        help="print the tables only, without writing them to bench/RESULTS.md")
    args = parser.parse_args()
    if args.tables_only and not args.work:
        parser.error("--tables-only reads --work")
    work = args.work or Path(tempfile.mkdtemp(prefix="khib-bench-hibernate-"))
    work.mkdir(parents=True, exist_ok=True)
    record = (json.loads((work / "runs.json").read_text()) if args.tables_only
              else measure(args, work))
    before, after = record["calibration"]
    config = record.get("config", "")
    name = Path(config).stem if config else record["arch"]
    block = "\n".join([
        f"Measured {record['date']} by `bench/hibernate.py --arch {record['arch']} --memory "
        f"{' '.join(map(str, record['memory']))} --reps {record['reps']}"
        f"{f' --config {config}' if config else ''}`, QEMU TCG on a {os.cpu_count()}-core "
        f"host without KVM. The machine's speed: SHA-256 of 256 MiB in Python took "
        f"{before:.2f} s before the runs and {after:.2f} s after.",
        "", table(from_logs(record, work), name, record["reps"])])
    print(block)
    print(f"\n(figures and console logs kept in {work})")
    if not args.no_results:
        write_block(f"hibernate {name}", block)

if __name__ == "__main__":
    main()
