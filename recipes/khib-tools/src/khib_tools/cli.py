"""khib jump | hibernate | back | save | restore | resume | info | export.

In the original kernel A, ``khib jump`` records A's RAM ranges, hands them to B in a
small cpio segment appended to B's initrd, confines B to a window of memory, loads B
with ``kexec --load-preserve-context`` and jumps; ``khib hibernate`` does the same, and B
saves A to a disk and powers off. In B, ``khib save`` writes A's memory to a disk,
``khib restore`` writes an image back, and ``khib back`` returns to A. A later boot with
``khib.resume=DEV`` runs ``khib resume``, which puts A back and jumps into it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from khib_tools import bootarea
from khib_tools.image import USED_MAGIC, NoImage, mark, read_image
from khib_tools.newc import archive
from khib_tools.status import StatusPage

HANDOFF = Path("/khib")  # where B finds what A recorded
LOW_WINDOWS = "memmap=636K@4K memmap=15M@1M"  # BIOS area and where A's kernel sits
RESERVE = "crashkernel=15M@1M"  # keeps B's allocations away from A's 1-16 MiB
# Physical KASLR ignores memmap=exactmap and would decompress B anywhere in A's RAM.
STAY = "nokaslr"
# B needs one CPU; A's others stay parked where A left them.
ONE_CPU = "maxcpus=1"
HEADROOM = 16 << 20  # free RAM A needs beyond the window while B runs
HIBERNATED = "hibernated"  # what B leaves in A's status page before saving A
# The key a resume checks the image with: a file in the resume boot's own initramfs (a
# config puts it there), or the one khib.key= names; never a file on the image's disk.
RESUME_KEY = "/etc/khib/hibernate.key"
HANDED_KEY = HANDOFF / "key"  # the key in B's memory, handed over by A or by stage 1


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


def cmdline_arg(name: str) -> str | None:
    """The value of ``name=`` on this kernel's command line."""
    match = re.search(rf"(?:^|\s){re.escape(name)}=(\S+)", Path("/proc/cmdline").read_text())
    return match[1] if match else None


def restarts() -> int:
    """How often this kernel has thawed its tasks: one more after a jump and return."""
    return run("dmesg").stdout.count("Restarting tasks")


def require(path: str, option: str) -> None:
    if not Path(path).exists():
        raise Failure(f"{path} is missing: this kernel lacks {option}")


def reservations(cmdline: str) -> list[tuple[str, int, int]]:
    """memmap=SIZE$START (or ! or #) reservations: (argument, start, end exclusive)."""
    found = []
    for match in re.finditer(r"memmap=(\w+)[$!#](\w+)", cmdline):
        start = size(match[2])
        found.append((match[0], start, start + size(match[1])))
    return found


def check_window(start: int, length: int, cmdline: str, meminfo: str) -> None:
    """Refuse a window kexec cannot use, or one A cannot spare while B runs."""
    for argument, low, high in reservations(cmdline):
        if low < start + length and start < high:
            raise Failure(f"the window {start >> 20}M:{length >> 20}M lies in memory reserved "
                          f"by {argument}: kexec cannot load B there (\"Could not find a free "
                          "area of memory\"). Boot A without it (the window needs no "
                          "reservation: kexec backs it up) or choose another --window")
    available = re.search(r"MemAvailable:\s+(\d+) kB", meminfo)
    if available and int(available[1]) << 10 < length + HEADROOM:
        raise Failure(f"A has {int(available[1]) >> 10} MiB available; a {length >> 20} MiB "
                      f"window needs {(length + HEADROOM) >> 20} MiB while B runs: free "
                      "memory or choose a smaller --window")


def kernel_identity() -> dict[str, str]:
    """This kernel's release, version string and build id (/sys/kernel/notes)."""
    uname = os.uname()
    identity = {"release": uname.release, "version": uname.version}
    notes = Path("/sys/kernel/notes")
    data = notes.read_bytes() if notes.exists() else b""
    at = 0
    while at + 12 <= len(data):
        namesz, descsz, kind = (int.from_bytes(data[at + 4 * i:at + 4 * i + 4], "little")
                                for i in range(3))
        name_end = at + 12 + (namesz + 3) // 4 * 4
        if kind == 3 and data[at + 12:at + 12 + namesz] == b"GNU\0":  # NT_GNU_BUILD_ID
            identity["build_id"] = data[name_end:name_end + descsz].hex()
        at = name_end + (descsz + 3) // 4 * 4
    return identity


def confinement(start: int, length: int) -> str:
    """B's command line: only the window and the low ranges B may use, placed as asked."""
    return " ".join(["memmap=exactmap", LOW_WINDOWS, f"memmap={length >> 20}M@{start >> 20}M",
                     RESERVE, STAY, ONE_CPU])


def consoles() -> list[str]:
    return re.findall(r"console=\S+", Path("/proc/cmdline").read_text())


def b_initrd(initrd: str, handoff: dict[str, bytes]) -> bytes:
    """B's initrd with what A recorded appended as an uncompressed cpio segment."""
    data = Path(initrd).read_bytes()
    return data + b"\0" * (-len(data) % 4) + archive(handoff)


def kernel_code(iomem: str) -> int | None:
    """Where A's "Kernel code" starts (i386 derives its PAGE_OFFSET from it)."""
    match = re.search(r"^\s*([0-9a-f]+)-[0-9a-f]+ : Kernel code$", iomem, re.MULTILINE)
    return int(match[1], 16) if match else None


def old_kernel_layout(iomem: str, cmdline: str) -> dict[str, object]:
    """What B needs to leave A's free pages out: A's VMCOREINFO note and "Kernel code";
    or why it must store them (A poisons free pages: zeros would read as corruption)."""
    if re.search(r"(?:^|\s)page_poison=(?:1|on|y)", cmdline):
        return {"free_pages": "stored: A poisons its free pages (page_poison=1)"}
    note = Path("/sys/kernel/vmcoreinfo")
    if not note.exists():
        return {"free_pages": "stored: A has no /sys/kernel/vmcoreinfo (CONFIG_CRASH_CORE)"}
    address, length = (int(part, 16) for part in note.read_text().split())
    return {"vmcoreinfo": [address, length], "kernel_code": kernel_code(iomem)}


def load_b(args: argparse.Namespace, status: StatusPage, b_run: str | None,
           extra: dict[str, object], key: bytes | None = None) -> tuple[bytes, str]:
    """Load B (kexec --load-preserve-context); B's initrd (without the key, which goes to
    B in memory only) and its confinement."""
    require("/proc/kcore", "CONFIG_PROC_KCORE")
    require("/sys/kernel/kexec_loaded", "CONFIG_KEXEC")
    start, length = args.window
    check_window(start, length, Path("/proc/cmdline").read_text(),
                 Path("/proc/meminfo").read_text())
    iomem = Path("/proc/iomem").read_text()
    ranges = ram_ranges(iomem)
    if not ranges:
        raise Failure("no System RAM in /proc/iomem (not root?)")
    record = {"window": [start, length], "ranges": [list(r) for r in ranges],
              "kernel": kernel_identity(), "cpus": os.cpu_count(),
              "boot_id": Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
              **old_kernel_layout(iomem, Path("/proc/cmdline").read_text()), **extra}
    handoff = {
        "khib/ranges": "".join(f"{a:08x}-{b:08x} : System RAM\n" for a, b in ranges).encode(),
        "khib/jump.json": json.dumps(record).encode(),
    }
    initrd = b_initrd(args.initrd, handoff)
    combined = Path("/tmp/khib-b-initrd")
    combined.write_bytes(b_initrd(args.initrd, {**handoff, "khib/key": key}) if key else initrd)
    confined = confinement(start, length)
    cmdline = [*consoles(), confined, f"khib.status={status.handle}",
               f"khib.deadline={args.deadline}"]
    if b_run:
        if '"' in b_run:
            raise Failure("--b-run cannot hold double quotes")
        cmdline.append(f'khib.run="{b_run}"')
    load = run("kexec", "--load-preserve-context", f"--mem-min={start:#x}",
               f"--mem-max={start + length - 1:#x}", f"--initrd={combined}",
               f"--append={' '.join(cmdline)}", args.kernel)
    combined.unlink()
    if load.returncode != 0:
        hint = ("; this kernel lacks CONFIG_KEXEC_JUMP" if "Invalid argument" in load.stderr
                else "")
        raise Failure(f"kexec --load-preserve-context failed: {load.stderr.strip()}{hint}")
    return initrd, confined


def jump_now(args: argparse.Namespace) -> None:
    """Jump to the loaded B; returns once A runs again (B came back, or A resumed)."""
    before = restarts()
    start, length = args.window
    free = re.search(r"^nr_free_pages (\d+)$", Path("/proc/vmstat").read_text(), re.MULTILINE)
    print(f"khib: jumping to {args.kernel} (window {start >> 20}M+{length >> 20}M; A has "
          f"{free[1] if free else '?'} free pages, NR_FREE_PAGES)", flush=True)
    run("kexec", "-e")  # returns when B jumps back; its status is not the verdict
    if restarts() <= before:
        raise Failure("the jump did not happen: kexec -e returned without freezing")


def window(text: str) -> tuple[int, int]:
    """--window START:SIZE, as (start, length) in bytes."""
    start, length = (size(part) for part in text.split(":"))
    return start, length


def status_page(args: argparse.Namespace) -> StatusPage:
    """A's status page, outside B's window."""
    start, length = args.window
    return StatusPage((start, start + length))


def jump(args: argparse.Namespace) -> int:
    status = status_page(args)
    load_b(args, status, args.b_run, {})
    jump_now(args)
    verdict = status.message()
    print(f"khib: resumed after the jump{f' ({verdict})' if verdict else ''}", flush=True)
    if verdict.startswith("failed"):
        raise Failure(f"in B: {verdict}")
    return 0


def hibernate(args: argparse.Namespace) -> int:
    """Jump to B, which saves A to the device and powers off; return once A resumes."""
    device = args.device
    if not Path(device).is_block_device():
        raise Failure(f"{device} is not a block device")
    status = status_page(args)
    key = Path(args.key).read_bytes() if args.key else None
    initrd, confined = load_b(args, status, f"khib b-hibernate {device}",
                              {"device": device}, key)
    limit = bootarea.write(device, bootarea.BootArea(
        Path(args.kernel).read_bytes(), initrd, confined, args.window, 0))
    mark(device, bytes(4))  # an earlier image on the device no longer counts
    print(f"khib: hibernating to {device} (room for a {limit >> 20} MiB image)", flush=True)
    jump_now(args)
    verdict = status.message()
    if verdict != HIBERNATED:
        raise Failure(f"hibernation failed, A carries on: {verdict or 'B gave no reason'}")
    print(f"khib: resumed from hibernation ({device})", flush=True)
    return 0


def back(_args: argparse.Namespace) -> int:
    entry = cmdline_arg("kexec_jump_back_entry")
    if not entry:
        raise Failure("no kexec_jump_back_entry= on the command line: not a kernel that "
                      "khib jump started")
    # Not kexec --load-jump-back-helper: khib-jump-back also maps A's control page,
    # which may lie outside B's memory (see khib-jump-back.c).
    require("/dev/mem", "CONFIG_DEVMEM")
    print(f"khib: jumping back (entry {entry})", flush=True)
    return subprocess.run(["khib-jump-back", entry], check=False).returncode


def save_command(dest: str, meta: Path | None = None, limit: int | None = None,
                 key: str | None = None, keep_free: bool = False) -> list[str]:
    """khib-save over A's memory, leaving out B's own RAM (it holds B, not A) and, unless
    ``keep_free``, the pages A had free."""
    if Path("/proc/vmcore").exists():
        command = ["khib-save", "--vmcore", "/proc/vmcore", "-o", dest]
    else:
        require("/dev/mem", "CONFIG_DEVMEM")
        ranges = HANDOFF / "ranges"
        if not ranges.is_file():
            raise Failure(f"{ranges} is missing: A's RAM ranges come with khib jump")
        command = ["khib-save", "--mem", "/dev/mem", "--ranges", str(ranges), "-o", dest]
        record = json.loads((HANDOFF / "jump.json").read_text())
        entry = cmdline_arg("kexec_jump_back_entry")
        if not keep_free and "vmcoreinfo" in record and entry:
            address, length = record["vmcoreinfo"]
            command += ["--vmcoreinfo", f"{address:#x}:{length:#x}",
                        "--control-page", f"{int(entry, 16) & ~0xFFF:#x}"]
            if record.get("kernel_code") is not None:
                command += ["--kernel-code", f"{record['kernel_code']:#x}"]
        elif not keep_free:
            print(f"khib: A's free pages are {record.get('free_pages', 'stored')}", flush=True)
    command += ["--exclude", "/proc/iomem"]
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


def b_hibernate(args: argparse.Namespace) -> int:
    """In B: save A with what a resume needs, then power off (a failure returns to A)."""
    entry = cmdline_arg("kexec_jump_back_entry")
    handle = cmdline_arg("khib.status")
    if not entry or not handle:
        raise Failure("not a kernel that khib hibernate started")
    record = json.loads((HANDOFF / "jump.json").read_text())
    area = bootarea.read(args.device)
    meta = Path("/tmp/khib-meta.json")
    meta.write_text(json.dumps({**record, "entry": entry,
                                "control_page": int(entry, 16) & ~0xFFF}))
    # Before the save, so that the saved A finds it once resumed.
    if subprocess.run(["khib-report", handle, HIBERNATED], check=False).returncode:
        raise Failure("cannot leave the verdict in A's status page")
    key = str(HANDED_KEY) if HANDED_KEY.is_file() else None
    saved = subprocess.run(save_command(args.device, meta, area.limit, key),
                           stderr=subprocess.PIPE, text=True, check=False)
    sys.stderr.write(saved.stderr)
    if saved.returncode < 0:
        raise Failure(f"khib-save was ended by signal {-saved.returncode}")
    if saved.returncode:  # its last words say why
        raise Failure(saved.stderr.strip().splitlines()[-1] if saved.stderr.strip()
                      else f"khib-save exited {saved.returncode}")
    os.sync()
    print("khib: A is saved; powering off", flush=True)
    subprocess.run(["poweroff", "-f"], check=False)
    return 1


def restore(args: argparse.Namespace) -> int:
    require("/dev/mem", "CONFIG_DEVMEM")
    command = ["khib-restore", args.image, "--mem", "/dev/mem"]
    command += ["--verify"] if args.verify else ["--running", "/proc/iomem"]
    command += ["--key", args.key] if args.key else []
    return subprocess.run(command, check=False).returncode


def export(args: argparse.Namespace) -> int:
    """A plain ELF core of the saved memory, as A had it, for crash and makedumpfile."""
    command = ["khib-restore", args.image, "--export", args.output]
    command += ["--key", args.key] if args.key else []
    return subprocess.run(command, check=False).returncode


def resume(args: argparse.Namespace) -> int:
    """A boot with khib.resume=DEV: check everything, then move out of A's way (first
    stage) or write A back and jump into it (khib.stage=restore, confined like B; on a
    failure /init returns to the first stage, which boots normally)."""
    device = args.device
    try:
        image = read_image(device)
        if cmdline_arg("khib.stage") == "restore":
            return restore_and_enter(device, image.meta)
        area = bootarea.read(device)
    except (NoImage, bootarea.NoBootArea) as exc:
        raise Failure(f"not resuming: {exc}") from exc
    ranges = [tuple(r) for r in image.meta.get("ranges", [])]
    here = ram_ranges(Path("/proc/iomem").read_text())
    if ranges != here:
        raise Failure(f"not resuming: this machine's RAM ({sum(b - a + 1 for a, b in here) >> 20}"
                      f" MiB in {len(here)} ranges) is not the RAM A ran with "
                      f"({sum(b - a + 1 for a, b in ranges) >> 20} MiB in {len(ranges)} ranges)")
    key_path = cmdline_arg("khib.key") or RESUME_KEY
    if key_path != RESUME_KEY and not Path(key_path).is_file():
        raise Failure(f"not resuming: khib.key={key_path}: no such file in the initramfs")
    key = ["--key", key_path] if Path(key_path).is_file() else []
    checked = run("khib-restore", device, "--check", *key)
    if checked.returncode:  # the first problem it names (a segment, the seal)
        problems = checked.stderr.strip().splitlines() or [f"{device} fails its check"]
        raise Failure(f"not resuming: {problems[0].removeprefix('khib: ')}")
    print(f"khib: the image on {device} is whole; moving into the window to restore it",
          flush=True)
    kernel, initrd = Path("/tmp/khib-kernel"), Path("/tmp/khib-initrd")
    kernel.write_bytes(area.kernel)
    # The key reaches the restore stage in memory, appended to its initrd.
    initrd.write_bytes(area.initrd + (b"\0" * (-len(area.initrd) % 4) + archive(
        {"khib/key": Path(key_path).read_bytes()}) if key else b""))
    start, length = area.window
    cmdline = [*consoles(), area.cmdline, f"khib.resume={device}", "khib.stage=restore"]
    # Loaded as B was: a plain load puts i386's setup data below 640 KiB, out of the window.
    load = run("kexec", "--load-preserve-context", f"--mem-min={start:#x}",
               f"--mem-max={start + length - 1:#x}", f"--initrd={initrd}",
               f"--append={' '.join(cmdline)}", str(kernel))
    if load.returncode:
        raise Failure(f"not resuming: kexec --load-preserve-context failed: "
                      f"{load.stderr.strip()}")
    run("kexec", "-e")  # returns only if the restore stage failed (it said why) and came back
    raise Failure("not resuming: the restore stage came back without entering A")


def restore_and_enter(device: str, meta: dict[str, object]) -> int:
    """Confined in the window: write A back (checked first), mark the image used, enter A."""
    entry = str(meta.get("entry", ""))
    if not entry:
        raise Failure("not resuming: the image records no jump-back entry")
    key = ["--key", str(HANDED_KEY)] if HANDED_KEY.is_file() else []
    restored = subprocess.run(["khib-restore", device, "--mem", "/dev/mem", "--running",
                               "/proc/iomem", *key], check=False)
    if restored.returncode:
        raise Failure("not resuming: khib-restore failed")
    mark(device, USED_MAGIC)
    print(f"khib: A is back in memory; entering it (entry {entry})", flush=True)
    entered = subprocess.run(["khib-jump-back", entry], check=False)
    # Back here only if the jump did not happen: the image is still good.
    mark(device, b"\x7fELF")
    raise Failure(f"not resuming: khib-jump-back exited {entered.returncode}")


def info(args: argparse.Namespace) -> int:
    """Segments, sizes, zero and free pages and checksums of a saved image; what it records."""
    try:
        image = read_image(args.image)
    except NoImage as exc:
        raise Failure(f"{args.image}: {exc}") from exc
    pages = {kind: sum(s.memsz for s in image.segments if s.kind == kind) >> 12
             for kind in ("data", "zero", "free")}
    total = sum(s.memsz for s in image.segments)
    stored = sum(s.filesz for s in image.segments)
    ratio = f" ({stored / (pages['data'] << 12):.2f} of it)" if pages["data"] else ""
    print(f"{args.image}: {len(image.segments)} segments, {total >> 20} MiB of memory, "
          f"{pages['data'] >> 8} MiB of data stored in {stored >> 20} MiB{ratio}, "
          f"{pages['zero']} zero pages, {pages['free']} free pages"
          f"{', keyed' if image.keyed else ''}{', with VMCOREINFO' if image.vmcoreinfo else ''}")
    if image.layout.free_counted:
        print(f"  free pages: {image.layout.free_recorded} recorded; the walk found "
              f"{image.layout.free_counted}, A counted {image.layout.kernel_count}")
    for key, value in sorted(image.meta.items()):
        if key != "ranges":
            print(f"  {key}: {value}")
    for s in image.segments:
        print(f"  {s.paddr:#012x}-{s.paddr + s.memsz - 1:#012x} {s.kind} {s.memsz:>12} "
              f"{s.filesz:>12} crc32={s.crc32:08x}")
    return 0


def jump_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kernel", required=True, help="the kernel to jump to (bzImage)")
    p.add_argument("--initrd", required=True, help="its initrd (a khib image)")
    p.add_argument("--window", type=window, default="256M:64M",
                   help="START:SIZE of memory B may use")
    p.add_argument("--deadline", type=int, default=600, metavar="S",
                   help="B returns to A if its command runs longer (default: %(default)s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="khib", description=__doc__.split("\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("jump", help="jump to another kernel, preserving this one")
    jump_options(p)
    p.add_argument("--b-run", help="a command B runs (khib.run=) instead of a shell")
    p.set_defaults(handler=jump)
    p = verbs.add_parser("hibernate", help="save this kernel to a disk (through B) and "
                         "power off; returns once resumed")
    jump_options(p)
    p.add_argument("--device", required=True, help="the disk to save to (its whole size)")
    p.add_argument("--key", help="seal the image with this key (HMAC-SHA256); the resume "
                   f"boot checks it with {RESUME_KEY} of its initramfs or khib.key=")
    p.set_defaults(handler=hibernate)
    verbs.add_parser("back", help="in B: jump back to the original kernel").set_defaults(
        handler=back)
    p = verbs.add_parser("save", help="in B: write A's memory to a file or disk")
    p.add_argument("dest")
    p.add_argument("--keep-free-pages", action="store_true",
                   help="store the pages A had free too")
    p.add_argument("--key", help="seal the image with this key (HMAC-SHA256)")
    p.set_defaults(handler=save)
    p = verbs.add_parser("b-hibernate", help="in B (khib hibernate runs it): save A to the "
                         "device, power off")
    p.add_argument("device")
    p.set_defaults(handler=b_hibernate)
    p = verbs.add_parser("restore", help="in B: write a saved image back into A's memory")
    p.add_argument("image")
    p.add_argument("--verify", action="store_true", help="only compare")
    p.add_argument("--key", help="refuse an image this key did not seal")
    p.set_defaults(handler=restore)
    p = verbs.add_parser("export", help="write a saved image as a plain ELF core (crash, "
                         "makedumpfile)")
    p.add_argument("image")
    p.add_argument("output")
    p.add_argument("--key", help="refuse an image this key did not seal")
    p.set_defaults(handler=export)
    p = verbs.add_parser("resume", help="at boot (khib.resume=DEV): resume A from DEV")
    p.add_argument("device")
    p.set_defaults(handler=resume)
    p = verbs.add_parser("info", help="describe a saved image")
    p.add_argument("image")
    p.set_defaults(handler=info)
    args = parser.parse_args(argv)
    try:
        status = int(args.handler(args))
        sys.stdout.flush()
        return status
    except BrokenPipeError:  # the reader left early (khib info | head): nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (Failure, OSError) as exc:
        print(f"khib: {exc}", file=sys.stderr)
        return 1
