"""Jumping from A to B and back: what A records for B, loading B, the verdict.

``khib jump`` records A's RAM ranges and layout, hands them to B in a small cpio segment
appended to B's initrd, confines B to its window and jumps; B leaves its verdict in A's
status page and jumps back (``khib back``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
from pathlib import Path
from typing import NamedTuple

from khib_tools import kexec, other, system, window
from khib_tools.status import StatusPage

HANDOFF = Path("/khib")  # where B finds what A recorded
B_KERNEL, B_INITRD = "/boot/bzImage", "/boot/khib-rootfs.gz"  # khib-build boot --with-b's
DEADLINE = 600  # seconds B's command may run, unless --deadline says otherwise


class Failure(Exception):
    """A message for the person at the console; exit status 1."""


class LoadedB(NamedTuple):
    initrd: bytes  # B's initrd, with what A recorded
    cmdline: str  # B's confinement (without its console= and khib.* arguments)
    ram: list[tuple[int, int]]  # A's System RAM


def old_kernel_layout(iomem: str, cmdline: str) -> dict[str, object]:
    """What B needs to leave A's free pages out: A's VMCOREINFO note and "Kernel code";
    or why it must store them (A poisons free pages: zeros would read as corruption)."""
    if re.search(r"(?:^|\s)page_poison=(?:1|on|y)", cmdline):
        return {"free_pages": "stored: A poisons its free pages (page_poison=1)"}
    note = Path("/sys/kernel/vmcoreinfo")
    if not note.exists():
        return {"free_pages": "stored: A has no /sys/kernel/vmcoreinfo (CONFIG_CRASH_CORE)"}
    address, length = (int(part, 16) for part in note.read_text().split())
    return {"vmcoreinfo": [address, length], "kernel_code": system.kernel_code(iomem)}


def load_b(args: argparse.Namespace, status: StatusPage, b_run: str | None,
           extra: dict[str, object], arguments: tuple[str, ...] = (),
           kernel: bytes | None = None) -> LoadedB:
    """Record A for B and load B (kexec --load-preserve-context) into the window prepare()
    checked: the kernel ``args.kernel`` names, or its bytes already read."""
    system.require("/proc/kcore", "CONFIG_PROC_KCORE")
    system.require("/sys/kernel/kexec_loaded", "CONFIG_KEXEC")
    other.forget()
    iomem = Path("/proc/iomem").read_text()
    ram = system.ram_ranges(iomem)
    start, length = args.window
    record = {"window": [start, length], "ranges": [list(r) for r in ram],
              "kernel": system.kernel_identity(), "cpus": os.cpu_count(),
              "boot_id": Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
              "status": status.handle,
              **old_kernel_layout(iomem, system.cmdline()), **extra}
    initrd = kexec.appended(Path(args.initrd).read_bytes(), {
        "khib/ranges": system.ram_listing(ram),
        "khib/jump.json": json.dumps(record).encode(),
    })
    confined = kexec.confinement(start, length)
    cmdline = [*system.consoles(), confined, f"khib.status={status.handle}",
               f"khib.deadline={DEADLINE if args.deadline is None else args.deadline}",
               *arguments]
    if b_run:
        if '"' in b_run:
            raise Failure("--b-run cannot hold double quotes")
        cmdline.append(f'khib.run="{b_run}"')
    try:
        kexec.load(kernel if kernel is not None else Path(args.kernel).read_bytes(), initrd,
                   " ".join(cmdline), args.window)
    except kexec.KexecError as exc:
        raise Failure(str(exc)) from exc
    return LoadedB(initrd, confined, ram)


def prepare(args: argparse.Namespace) -> None:
    """Before anything is loaded: B's kernel and initrd (those given, or the defaults)
    are there, an image loaded before is unloaded (the new B replaces it; its pages count
    as A's), and the window (the one given, or the default for A's RAM) is one B can
    own."""
    args.kernel, args.initrd = args.kernel or B_KERNEL, args.initrd or B_INITRD
    missing = [f"{what} {path}" for what, path in (("kernel", args.kernel),
                                                     ("initrd", args.initrd))
               if not Path(path).is_file()]
    if missing:
        raise Failure(f"B's {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                      "missing: boot this guest with `khib-build boot --with-b` (it puts its "
                      f"kernel at {B_KERNEL} and its image at {B_INITRD}), or give --kernel and "
                      "--initrd")
    ram = system.ram_ranges(Path("/proc/iomem").read_text())
    if not any(end > start for start, end in ram):
        raise Failure("no System RAM in /proc/iomem (not root?)")
    if other.loaded():
        print(f"khib: the new B replaces the image loaded: unloaded {other.unload_image()}",
              flush=True)
    try:
        args.window = args.window or window.default(ram)
        window.check(*args.window, ram, system.cmdline(), Path("/proc/meminfo").read_text())
    except window.WindowError as exc:
        raise Failure(str(exc)) from exc


def jump_now(args: argparse.Namespace, status: StatusPage) -> str:
    """Jump to the loaded B; once A runs again, B's verdict (from the status page: a
    jump that never happened leaves none)."""
    start, length = args.window
    with contextlib.suppress(OSError):  # fold the per-CPU counters in: B reads them
        Path("/proc/sys/vm/stat_refresh").write_text("1")
    free = re.search(r"^nr_free_pages (\d+)$", Path("/proc/vmstat").read_text(), re.MULTILINE)
    going = "entering B again" if getattr(args, "again", False) else f"jumping to {args.kernel}"
    print(f"khib: {going} (window {start >> 20}M+{length >> 20}M; A has "
          f"{free[1] if free else '?'} free pages, NR_FREE_PAGES)", flush=True)
    status.clear()
    status.still_here()
    complaint = kexec.jump()  # returns when B jumps back; its status is not the verdict
    verdict = status.message()
    if not verdict:
        said = f": {complaint}" if complaint else ""
        raise Failure(f"the jump did not happen: kexec -e returned{said} and B left no "
                      "verdict")
    return verdict


def jump(args: argparse.Namespace) -> int:
    """Load B and jump to it; or (--again) enter the B that jumped back, or (--unload)
    unload it. B stays loaded after each return, its memory readable (other.py)."""
    if args.again or args.unload:
        given = [f"--{name}" for name in ("kernel", "initrd", "window", "deadline")
                 if getattr(args, name) is not None] + (
                     ["--b-run"] if args.unload and args.b_run else [])
        if given:
            verb = "--again" if args.again else "--unload"
            raise Failure(f"{' and '.join(given)} cannot go with {verb}: it is about the B "
                          "loaded already")
    if args.unload:
        return other.unload(args)
    digest = None
    if args.again:
        state = other.recall("enter again")
        args.kernel, args.window = state["kernel"], tuple(state["window"])  # type: ignore[arg-type]
        digest = str(state["digest"])  # entering B again leaves its list as it was
        status = StatusPage(window_span(args.window))
        other.send_request(state, status.handle, args.b_run)
    else:
        prepare(args)
        status = StatusPage(window_span(args.window))
        load_b(args, status, args.b_run, {})
    try:
        verdict = jump_now(args, status)
        other.remember(args.kernel, args.window, status.returned(), digest)
    finally:
        status.close()
    print(f"khib: resumed after the jump ({verdict})", flush=True)
    if verdict.startswith("failed"):
        raise Failure(f"in B: {verdict}")
    return 0


def window_span(window_arg: tuple[int, int]) -> tuple[int, int]:
    start, length = window_arg
    return start, start + length


def back(_args: argparse.Namespace) -> int:
    entry = system.cmdline_arg("kexec_jump_back_entry")
    if not entry:
        raise Failure("no kexec_jump_back_entry= on the command line: not a kernel that "
                      "khib jump started")
    # Not kexec --load-jump-back-helper: khib-jump-back also maps A's control page,
    # which may lie outside B's memory (see khib-jump-back.c).
    system.require("/dev/mem", "CONFIG_DEVMEM")
    print(f"khib: jumping back (entry {entry})", flush=True)
    return subprocess.run(["khib-jump-back", entry], check=False).returncode
