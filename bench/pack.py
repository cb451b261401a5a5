#!/usr/bin/env python3
"""Pack benchmark: khib-build against GNU cpio, bsdtar and the kernel's gen_init_cpio.

Two trees, (a) 20,000 small files and (b) a few large files (500 MB by default), packed
at equal settings (none, gzip -6, zstd -3) by each tool end to end from a directory:

  khib       khib-build pack DIR --compress X --level N
  gnu-cpio   find . | LC_ALL=C sort | cpio -o -H newc | COMPRESSOR
  bsdtar     bsdtar --format newc -cf - -C DIR . | COMPRESSOR
  gen_init   usr/gen_initramfs.sh (list generation included) | COMPRESSOR
  gen_floor  gen_init_cpio on a prepared list (uncompressed only): the C floor

COMPRESSOR is gzip -6 or zstd -3 -T0 (zstd with all cores). Each figure is the median
of --reps runs: wall seconds, CPU seconds (user + system, children included), peak RSS
of the largest process (both from GNU time), and output size; ratios are khib's wall
time over each peer's.

Run: make bench, or .venv/bin/python bench/pack.py [--large-mb 500] [--reps 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.helpers import kernel_usr_tools  # noqa: E402

SETTINGS = {"none": ("cat", "none", 0), "gzip-6": ("gzip -6", "gzip", 6),
            "zstd-3": ("zstd -3 -T0 -q", "zstd", 3)}


def small_tree(root: Path, count: int = 20_000) -> Path:
    if root.is_dir():
        return root
    rng = random.Random(1)
    words = [f"w{i:x}".encode() for i in range(4096)]
    tmp = root.with_suffix(".tmp")
    for i in range(count):
        folder = tmp / f"d{i % 100:02d}" / f"s{i % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        size = rng.randint(0, 4000)
        (folder / f"file{i}.txt").write_bytes(b" ".join(rng.choices(words, k=size // 5)))
    tmp.rename(root)
    return root


def large_tree(root: Path, megabytes: int) -> Path:
    if root.is_dir():
        return root
    rng = random.Random(2)
    tmp = root.with_suffix(".tmp")
    tmp.mkdir(parents=True)
    block = bytearray()
    words = [os.urandom(rng.randint(2, 12)) for _ in range(20_000)]
    while len(block) < 4 << 20:  # 4 MiB of compressible, not trivial, data
        block += b" ".join(rng.choices(words, k=1000))
    per_file = megabytes // 5
    for i in range(5):
        with (tmp / f"blob{i}.bin").open("wb") as handle:
            for j in range(per_file // 4):
                handle.write(bytes(block[j % 7:]) + bytes(block[: j % 7]))
    tmp.rename(root)
    return root


def run(command: str) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and peak RSS (KiB) of a shell command and its children.

    GNU time measures, not this process: a child forked from Python would count the
    Python process's own memory in its peak RSS.
    """
    with tempfile.NamedTemporaryFile("r") as report:
        start = time.monotonic()
        status = subprocess.run(["/usr/bin/time", "-f", "%U %S %M", "-o", report.name,
                                 "sh", "-c", command], check=False).returncode
        wall = time.monotonic() - start
        if status != 0:
            raise SystemExit(f"failed ({status}): {command}")
        user, system, rss = report.read().split()[-3:]
    return wall, float(user) + float(system), int(rss)


def commands(tree: Path, out: Path, setting: str, tools: Path, listing: Path) -> dict[str, str]:
    compress, fmt, level = SETTINGS[setting]
    q = shlex.quote
    khib = f"{q(sys.executable)} -m khib_build pack {q(str(tree))} -o {q(str(out))} " \
           f"--compress {fmt}" + (f" --level {level}" if level else "") + " > /dev/null"
    found = {
        "khib": khib,
        "gnu-cpio": f"cd {q(str(tree))} && find . | LC_ALL=C sort | cpio -o -H newc --quiet | "
                    f"{compress} > {q(str(out))}",
        "bsdtar": f"bsdtar --format newc -cf - -C {q(str(tree))} . | {compress} > {q(str(out))}",
        "gen_init": f"cd {q(str(tools))} && sh usr/gen_initramfs.sh -o /dev/stdout "
                    f"{q(str(tree))} | {compress} > {q(str(out))}",
    }
    if setting == "none":
        found["gen_floor"] = f"{q(str(tools / 'usr' / 'gen_init_cpio'))} {q(str(listing))} " \
                             f"> {q(str(out))}"
    return found


def prepared_list(tools: Path, tree: Path, listing: Path) -> None:
    """The file list gen_initramfs.sh would generate, written once ahead of timing."""
    script = (tools / "usr" / "gen_initramfs.sh").read_text()
    # Run the script's list generation only: stop it before it calls gen_init_cpio.
    head = script.split("usr/gen_init_cpio $timestamp")[0]
    text = subprocess.run(["sh", "-c", head + '\ncat "$cpio_list"', "gen_initramfs.sh",
                           "-o", "/dev/null", str(tree)], cwd=tools, capture_output=True,
                          text=True, check=True).stdout
    listing.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--large-mb", type=int, default=500)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/khib-bench"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    tools = kernel_usr_tools()
    trees = {"20k small files": small_tree(args.work / "small"),
             f"{args.large_mb} MB large files": large_tree(args.work / f"large-{args.large_mb}",
                                                          args.large_mb)}
    out = args.work / "out"
    print("| tree | setting | tool | wall s | CPU s | peak RSS MiB | size MiB | khib/peer wall |")
    print("|---|---|---|---|---|---|---|---|")
    for label, tree in trees.items():
        listing = args.work / f"{tree.name}.list"
        prepared_list(tools, tree, listing)
        for setting in SETTINGS:
            results = {}
            for tool, command in commands(tree, out, setting, tools, listing).items():
                runs = [run(command) for _ in range(args.reps)]
                results[tool] = (statistics.median(r[0] for r in runs),
                                 statistics.median(r[1] for r in runs),
                                 max(r[2] for r in runs) / 1024, out.stat().st_size / 2**20)
            for tool, (wall, cpu, rss, size) in results.items():
                ratio = results["khib"][0] / wall
                print(f"| {label} | {setting} | {tool} | {wall:.2f} | {cpu:.2f} | {rss:.0f} | "
                      f"{size:.1f} | {ratio:.2f} |", flush=True)
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
