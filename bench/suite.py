#!/usr/bin/env python3
"""The cold build floor of the test suite: everything `make test` builds, and nothing else.

From an empty build cache (the download dir given, so no time goes to the network), one
after the other, each with all cores:

  rootfs i386      the default image's packages and image
  rootfs x86_64    the same for x86_64
  kernel i386      the khib kernel for each (Debian's linux-source-6.1, unpacked once)
  kernel x86_64
  from scratch     the default image again with --no-cache (the reproducibility test's
                   own build)

The suite's cold time is compared with this floor in bench/RESULTS.md: the rest of a
cold `make test` is the tests themselves (QEMU boots above all).

Run: .venv/bin/python bench/suite.py [--work DIR] [--dl-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KHIB = [sys.executable, "-m", "khib_build"]
STEPS = [
    ("rootfs i386", ["rootfs", "-c", "khib", "-o", "i386"]),
    ("rootfs x86_64", ["rootfs", "-c", "khib-x86_64", "-o", "x86_64"]),
    ("kernel i386", ["kernel", "-c", "khib", "-o", "i386"]),
    ("kernel x86_64", ["kernel", "-c", "khib-x86_64", "-o", "x86_64"]),
    ("from scratch", ["rootfs", "-c", "khib", "-o", "scratch", "--no-cache"]),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="work dir (default: a temporary one)")
    parser.add_argument("--dl-dir", type=Path,
                        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                        / "khib-build" / "dl", help="download dir with the sources")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="khib-suite-floor-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "KHIB_CACHE_DIR": str(work / "cache"),
           "KHIB_DL_DIR": str(args.dl_dir)}
    total = 0.0
    print("| step | wall s |\n|---|---|")
    for label, argv in STEPS:
        started = time.perf_counter()
        result = subprocess.run([*KHIB, *argv], cwd=work, env=env, capture_output=True,
                                text=True, check=False)
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            sys.exit(f"{label} failed:\n{result.stderr[-3000:]}")
        total += seconds
        print(f"| {label} | {seconds:.0f} |", flush=True)
    print(f"| **cold build floor** | **{total:.0f}** ({total / 60:.1f} min) |")


if __name__ == "__main__":
    main()
