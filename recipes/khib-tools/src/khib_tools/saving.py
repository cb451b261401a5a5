"""In B: saving A's memory with the C core, writing an image back, exporting it.

khib-save reads A's RAM through /dev/mem over the ranges A handed over, leaving out B's
own RAM (it holds B, not A) and, unless asked to keep them, the pages A had free.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from khib_tools import system
from khib_tools.jumping import HANDOFF, Failure


def save_command(dest: str, meta: Path | None = None, limit: int | None = None,
                 key: str | None = None, keep_free: bool = False,
                 vmcore: bool = True) -> list[str]:
    """khib-save over A's memory (from /proc/vmcore where B has it and ``vmcore``, else
    /dev/mem over the ranges A handed over)."""
    if vmcore and Path("/proc/vmcore").exists():
        command = ["khib-save", "--vmcore", "/proc/vmcore", "-o", dest]
    else:
        system.require("/dev/mem", "CONFIG_DEVMEM")
        ranges = HANDOFF / "ranges"
        if not ranges.is_file():
            raise Failure(f"{ranges} is missing: A's RAM ranges come with khib jump")
        command = ["khib-save", "--mem", "/dev/mem", "--ranges", str(ranges), "-o", dest]
        record = json.loads((HANDOFF / "jump.json").read_text())
        entry = system.cmdline_arg("kexec_jump_back_entry")
        if not keep_free and "vmcoreinfo" in record and entry:
            address, length = record["vmcoreinfo"]
            command += ["--vmcoreinfo", f"{address:#x}:{length:#x}",
                        "--control-page", f"{int(entry, 16) & ~0xFFF:#x}"]
            if record.get("kernel_code") is not None:
                command += ["--kernel-code", f"{record['kernel_code']:#x}"]
        elif not keep_free:
            print(f"khib: A's free pages are {record.get('free_pages', 'stored')}", flush=True)
    command += ["--exclude", "/proc/iomem", *system.low_option()]
    if meta is not None:
        command += ["--meta", str(meta)]
    if limit is not None:
        command += ["--limit", str(limit)]
    if key is not None:
        command += ["--key", key]
    return command


def save(args: argparse.Namespace) -> int:
    return subprocess.run(save_command(args.dest, key=args.key, keep_free=args.keep_free_pages),
                          check=False).returncode


def restore(args: argparse.Namespace) -> int:
    system.require("/dev/mem", "CONFIG_DEVMEM")
    command = ["khib-restore", args.image, "--mem", "/dev/mem", *system.low_option()]
    command += ["--verify"] if args.verify else ["--running", "/proc/iomem"]
    command += ["--key", args.key] if args.key else []
    return subprocess.run(command, check=False).returncode


def check(args: argparse.Namespace) -> int:
    """The whole image against its seal (and key): nothing written anywhere."""
    command = ["khib-restore", args.image, "--check"]
    command += ["--key", args.key] if args.key else []
    return subprocess.run(command, check=False).returncode


def export(args: argparse.Namespace) -> int:
    """A plain ELF core of the saved memory, as A had it, for crash and makedumpfile."""
    if Path(args.output).exists() and not Path(args.output).is_file():
        raise Failure(f"{args.output} is not a regular file: an export is a core file (with "
                      "holes where A had zeros), written to a file")
    command = ["khib-restore", args.image, "--export", args.output]
    command += ["--key", args.key] if args.key else []
    return subprocess.run(command, check=False).returncode
