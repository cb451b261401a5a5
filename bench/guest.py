"""docs/jump.md's five commands, timed: build, disk, hibernate, resume (QEMU TCG, x86_64,
512 MiB, 2 CPUs). Writes the figures into bench/RESULTS.md and the same block into
docs/jump.md's "Figures" (tests/test_docs.py checks the two agree), so that the doc
quotes what was measured last.

    .venv/bin/python bench/guest.py
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from results import RESULTS, write_block  # noqa: E402

from tests.test_jump_doc import five_commands  # noqa: E402

STEPS = ("build the image", "build the kernel", "make the disk", "hibernate (to power-off)",
         "resume (to A's next line)")


def run(commands: list[str], folder: Path) -> tuple[list[float], list[str]]:
    """Each command's seconds and output, in a folder with the checkout's configs."""
    for name in ("configs", "overlays"):
        shutil.copytree(REPO / name, folder / name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    seconds, outputs = [], []
    for command in commands:
        started = time.monotonic()
        result = subprocess.run(["bash", "-e", "-c", command], cwd=folder, env=env,
                                capture_output=True, text=True, check=False)
        seconds.append(time.monotonic() - started)
        if result.returncode:
            sys.exit(f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        outputs.append(result.stdout)
    return seconds, outputs


def figures(seconds: list[float], outputs: list[str], disk: Path) -> str:
    """The markdown block: each command's time, and what the save and resume printed."""
    saved = re.search(r"khib-save: /dev/vda: (\d+) segments, (\d+) MiB of data stored in (\d+) "
                      r"MiB \(LZ4\), (\d+) MiB scanned, .* in ([\d.]+) s", outputs[3])
    restored = re.search(r"khib-restore: (\d+) segments written and verified in ([\d.]+) s",
                         outputs[4])
    assert saved and restored, "the save's or the restore's line is missing"
    rows = [f"| {step} | {took:.0f} s |" for step, took in zip(STEPS, seconds, strict=True)]
    return "\n".join([
        f"Measured {time.strftime('%Y-%m-%d', time.gmtime())} by `bench/guest.py`: "
        "docs/jump.md's five commands, x86_64, QEMU TCG on a 2-core machine without KVM, "
        "512 MiB, 2 CPUs, a warm build cache (the first build of the image and kernel "
        "takes minutes more).",
        "",
        "| step | seconds |",
        "|---|---|",
        *rows,
        "",
        f"The save in B scanned {saved[4]} MiB of A's RAM and stored {saved[2]} MiB of data "
        f"in {saved[3]} MiB ({saved[1]} segments) in {saved[5]} s; the restore stage wrote "
        f"and verified {restored[1]} segments in {restored[2]} s; the disk holds "
        f"{disk.stat().st_blocks * 512 >> 20} MiB."])


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="khib-guest-") as name:
        seconds, outputs = run(five_commands(), Path(name))
        block = figures(seconds, outputs, Path(name) / "disk.img")
    for path in (RESULTS, REPO / "docs" / "jump.md"):
        write_block("five-commands", block, path)
    print(block)


if __name__ == "__main__":
    main()
