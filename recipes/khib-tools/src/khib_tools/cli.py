"""khib jump | back | save | restore | info.

In the original kernel A, ``khib jump`` records A's RAM ranges, hands them to B in a
small cpio segment appended to B's initrd, confines B to a window of memory, loads B
with ``kexec --load-preserve-context`` and jumps.  In B, ``khib save`` writes A's memory
to a disk, ``khib restore`` writes an image back, and ``khib back`` returns to A.
"""

from __future__ import annotations

import argparse
import json
import re
import struct
import subprocess
import sys
from pathlib import Path

from khib_tools.newc import archive

HANDOFF = Path("/khib")  # where B finds what A recorded
LOW_WINDOWS = "memmap=636K@4K memmap=15M@1M"  # BIOS area and where A's kernel sits
RESERVE = "crashkernel=15M@1M"  # keeps B's allocations away from A's control page
# Physical KASLR ignores memmap=exactmap and would decompress B anywhere in A's RAM.
STAY = "nokaslr"


class Failure(Exception):
    """A message for the person at the console; exit status 1."""


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1], 0) * units[text[-1]] if text[-1] in units else int(text, 0)


def ram_ranges(iomem: str) -> list[tuple[int, int]]:
    """Top-level "System RAM" ranges of /proc/iomem, as (start, end) inclusive."""
    found = []
    for line in iomem.splitlines():
        match = re.fullmatch(r"([0-9a-f]+)-([0-9a-f]+) : System RAM", line)
        if match:
            found.append((int(match[1], 16), int(match[2], 16)))
    return found


def restarts() -> int:
    """How often this kernel has thawed its tasks: one more after a jump and return."""
    return run("dmesg").stdout.count("Restarting tasks")


def require(path: str, option: str) -> None:
    if not Path(path).exists():
        raise Failure(f"{path} is missing: this kernel lacks {option}")


def jump(args: argparse.Namespace) -> int:
    require("/proc/kcore", "CONFIG_PROC_KCORE")
    require("/sys/kernel/kexec_loaded", "CONFIG_KEXEC")
    start, length = (size(part) for part in args.window.split(":"))
    ranges = ram_ranges(Path("/proc/iomem").read_text())
    if not ranges:
        raise Failure("no System RAM in /proc/iomem (not root?)")
    handoff = archive({
        "khib/ranges": "".join(f"{a:08x}-{b:08x} : System RAM\n" for a, b in ranges).encode(),
        "khib/jump.json": json.dumps({"window": [start, length]}).encode(),
    })
    initrd = Path(args.initrd).read_bytes()
    combined = Path("/tmp/khib-b-initrd")
    combined.write_bytes(initrd + b"\0" * (-len(initrd) % 4) + handoff)
    consoles = re.findall(r"console=\S+", Path("/proc/cmdline").read_text())
    cmdline = [*consoles, "memmap=exactmap", LOW_WINDOWS, f"memmap={length >> 20}M@{start >> 20}M",
               RESERVE, STAY]
    if args.b_run:
        if '"' in args.b_run:
            raise Failure("--b-run cannot hold double quotes")
        cmdline.append(f'khib.run="{args.b_run}"')
    load = run("kexec", "--load-preserve-context", f"--mem-min={start:#x}",
               f"--mem-max={start + length - 1:#x}", f"--initrd={combined}",
               f"--append={' '.join(cmdline)}", args.kernel)
    if load.returncode != 0:
        hint = ("; this kernel lacks CONFIG_KEXEC_JUMP" if "Invalid argument" in load.stderr
                else "")
        raise Failure(f"kexec --load-preserve-context failed: {load.stderr.strip()}{hint}")
    before = restarts()
    print(f"khib: jumping to {args.kernel} (window {start >> 20}M+{length >> 20}M)", flush=True)
    run("kexec", "-e")  # returns when B jumps back; its status is not the verdict
    if restarts() <= before:
        raise Failure("the jump did not happen: kexec -e returned without freezing")
    print("khib: resumed after the jump", flush=True)
    return 0


def back(_args: argparse.Namespace) -> int:
    match = re.search(r"kexec_jump_back_entry=(0x[0-9a-fA-F]+)", Path("/proc/cmdline").read_text())
    if not match:
        raise Failure("no kexec_jump_back_entry= on the command line: not a kernel that "
                      "khib jump started")
    entry = match[1]
    # Not kexec --load-jump-back-helper: khib-jump-back also maps A's control page,
    # which may lie outside B's memory (see khib-jump-back.c).
    require("/dev/mem", "CONFIG_DEVMEM")
    print(f"khib: jumping back (entry {entry})", flush=True)
    return subprocess.run(["khib-jump-back", entry], check=False).returncode


def save(args: argparse.Namespace) -> int:
    if Path("/proc/vmcore").exists():
        command = ["khib-save", "--vmcore", "/proc/vmcore", "-o", args.dest]
    else:
        require("/dev/mem", "CONFIG_DEVMEM")
        ranges = HANDOFF / "ranges"
        if not ranges.is_file():
            raise Failure(f"{ranges} is missing: A's RAM ranges come with khib jump")
        command = ["khib-save", "--mem", "/dev/mem", "--ranges", str(ranges), "-o", args.dest]
    # B's own RAM holds B, not A: leave it out (restoring it would overwrite B).
    return subprocess.run([*command, "--exclude", "/proc/iomem"], check=False).returncode


def restore(args: argparse.Namespace) -> int:
    require("/dev/mem", "CONFIG_DEVMEM")
    command = ["khib-restore", args.image, "--mem", "/dev/mem"]
    return subprocess.run([*command, *(["--verify"] if args.verify else [])],
                          check=False).returncode


def info(args: argparse.Namespace) -> int:
    """Segments, sizes, zero pages and checksums of a saved image."""
    with open(args.image, "rb") as image:
        header = image.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2:
            raise Failure(f"{args.image}: not a khib image")
        phoff, = struct.unpack_from("<Q", header, 32)
        phnum, = struct.unpack_from("<H", header, 56)
        image.seek(phoff)
        phdrs = [struct.unpack("<IIQQQQQQ", image.read(56)) for _ in range(phnum)]
        records = []
        for kind, _, offset, _, _, _, _, _ in phdrs:
            if kind == 4:
                image.seek(offset)
                _, descsz, _ = struct.unpack("<III", image.read(12))
                if image.read(8)[:4] == b"KHIB":
                    records = [struct.unpack("<QQII", image.read(24))
                               for _ in range(descsz // 24)]
    loads = [p for p in phdrs if p[0] == 1]
    stored = sum(p[5] for p in loads)
    total = sum(p[6] for p in loads)
    zero_pages = sum(r[3] for r in records)
    print(f"{args.image}: {len(loads)} segments, {total >> 20} MiB of memory, "
          f"{stored >> 20} MiB stored, {zero_pages} zero pages")
    for (_, _, _, _, paddr, filesz, memsz, _), record in zip(loads, records, strict=False):
        kind = "zero" if filesz == 0 else "data"
        print(f"  {paddr:#012x}-{paddr + memsz - 1:#012x} {kind} {memsz:>12} "
              f"crc32={record[2]:08x}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="khib", description=__doc__.split("\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("jump", help="jump to another kernel, preserving this one")
    p.add_argument("--kernel", required=True, help="the kernel to jump to (bzImage)")
    p.add_argument("--initrd", required=True, help="its initrd (a khib image)")
    p.add_argument("--window", default="256M:64M", help="START:SIZE of memory B may use")
    p.add_argument("--b-run", help="a command B runs (khib.run=) instead of a shell")
    p.set_defaults(handler=jump)
    verbs.add_parser("back", help="in B: jump back to the original kernel").set_defaults(
        handler=back)
    p = verbs.add_parser("save", help="in B: write A's memory to a file or disk")
    p.add_argument("dest")
    p.set_defaults(handler=save)
    p = verbs.add_parser("restore", help="in B: write a saved image back into A's memory")
    p.add_argument("image")
    p.add_argument("--verify", action="store_true", help="only compare")
    p.set_defaults(handler=restore)
    p = verbs.add_parser("info", help="describe a saved image")
    p.add_argument("image")
    p.set_defaults(handler=info)
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except (Failure, OSError) as exc:
        print(f"khib: {exc}", file=sys.stderr)
        return 1
