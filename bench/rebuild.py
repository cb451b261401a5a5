#!/usr/bin/env python3
"""Rebuild benchmark: how fast khib-build knows there is nothing (or little) to do.

Scenarios, each with a fresh build cache in the work dir:

  cold         the default image (configs/khib.yaml) from an empty cache
  no-op        the same command again (median of --reps runs); target: under 0.25 s
  other dir    a second output dir on the same cache (everything restored)
  point release  the default image after a Debian point release of the C library: dpkg
               reports new versions of its -dev packages (a copy of dpkg's status with
               the versions bumped, through DPKG_ADMINDIR), so the sysroot is assembled
               anew, with the same headers; packages keyed on what their builds read
               stay up to date (run with --repo at an older checkout for a before/after)
  CLI start    `khib-build --version`, the floor under the no-op
  leaf touch   a three-package sample (libgreet <- app, tool): tool's source changed
  dep touch    the same sample: libgreet's source changed (libgreet and app rebuilt)
  cut-off      the same sample: a comment in libgreet's build script (libgreet rebuilt,
               its output identical, app kept)

The peer is GNU make on a Makefile with one stamp-file rule per package and the same
graph (what a make-based builder such as Buildroot runs at the very least on a no-op,
before evaluating any package makefile); its no-op is measured in the same run and
khib-build's no-op is printed as a ratio to it.  Buildroot and BitBake themselves
cannot be installed offline here.

Run: make bench-rebuild, or .venv/bin/python bench/rebuild.py [--reps 5] [--work DIR]
[--repo DIR] (the khib-build checkout to measure: this one by default)
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.helpers import point_release, write_graph_sample  # noqa: E402

KHIB = [sys.executable, "-m", "khib_build"]


def timed(argv: list[str], cwd: Path = REPO, env: dict[str, str] | None = None
          ) -> tuple[float, dict[str, object] | None]:
    """Wall seconds of one run, and its JSON summary when it printed one."""
    started = time.perf_counter()
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False,
                            env=env)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(argv)}\n{result.stderr}")
    summary = json.loads(result.stdout) if result.stdout.startswith("{") else None
    return seconds, summary


def statuses(summary: dict[str, object] | None) -> str:
    assert summary is not None
    packages = summary["packages"]
    assert isinstance(packages, list)
    return ", ".join(f"{p['name']} {p['status']}" for p in packages) + \
        f"; image {summary['status']}"


def make_peer(work: Path, reps: int) -> float:
    """GNU make's no-op over stamp files for the sample's graph."""
    folder = work / "make-peer"
    folder.mkdir()
    (folder / "Makefile").write_text(
        "all: app.stamp tool.stamp\n"
        "libgreet.stamp:\n\ttouch $@\n"
        "app.stamp: libgreet.stamp\n\ttouch $@\n"
        "tool.stamp:\n\ttouch $@\n")
    subprocess.run(["make", "-s"], cwd=folder, check=True)
    return statistics.median(timed(["make", "-s"], folder)[0] for _ in range(reps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--work", type=Path, help="work dir (default: a temporary one)")
    parser.add_argument("--repo", type=Path, default=REPO,
                        help="the khib-build checkout to measure (default: this one)")
    args = parser.parse_args()
    repo = args.repo.resolve()
    work = args.work or Path(tempfile.mkdtemp(prefix="khib-bench-rebuild-"))
    work.mkdir(parents=True, exist_ok=True)
    cache = ["--cache-dir", str(work / "cache")]
    rows: list[tuple[str, float, str]] = []

    default = [*KHIB, "rootfs", "--json", *cache]
    seconds, summary = timed([*default, "-o", str(work / "out")], repo)
    rows.append(("default image: cold", seconds, statuses(summary)))
    runs = [timed([*default, "-o", str(work / "out")], repo) for _ in range(args.reps)]
    noop = statistics.median(s for s, _ in runs)
    rows.append((f"default image: no-op (median of {args.reps})", noop, statuses(runs[-1][1])))
    start = statistics.median(timed([*KHIB, "--version"], repo)[0] for _ in range(args.reps))
    rows.append((f"CLI start, `--version` (median of {args.reps})", start, "the floor"))
    seconds, summary = timed([*default, "-o", str(work / "other")], repo)
    rows.append(("default image: other output dir", seconds, statuses(summary)))
    seconds, summary = timed([*default, "-o", str(work / "out")], repo, point_release(work))
    rows.append(("default image: point release of the C library", seconds,
                 statuses(summary)))

    sample = work / "sample"
    sample.mkdir()
    config = write_graph_sample(sample)
    graph = [*KHIB, "rootfs", "--json", *cache, "-c", str(config), "-o", str(sample / "out")]
    seconds, summary = timed(graph, repo)
    rows.append(("sample: cold", seconds, statuses(summary)))
    noop_sample = statistics.median(timed(graph, repo)[0] for _ in range(args.reps))
    rows.append((f"sample: no-op (median of {args.reps})", noop_sample, "all up to date"))
    for label, path, old, new in (
        ("sample: leaf touch", "tool/src/tool.c", '"tool"', '"tool 2"'),
        ("sample: dep touch", "libgreet/src/greet.c", "hello", "hi"),
        ("sample: cut-off", "libgreet/files/build.sh", "# Builds", "# Compiles"),
    ):
        file = sample / "recipes" / path
        file.write_text(file.read_text().replace(old, new))
        seconds, summary = timed(graph, repo)
        rows.append((label, seconds, statuses(summary)))
    peer = make_peer(work, args.reps)

    print("| scenario | wall s | what happened |\n|---|---|---|")
    for label, seconds, what in rows:
        print(f"| {label} | {seconds:.2f} | {what} |")
    print(f"| GNU make no-op, stamp files, same graph (median of {args.reps}) | {peer:.3f} | "
          "peer floor |")
    print(f"\nno-op, default image: {noop:.2f} s beside a CLI start of {start:.2f} s; "
          f"khib/make-floor {noop_sample / peer:.0f}x on the sample")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
