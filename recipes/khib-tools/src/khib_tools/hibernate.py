"""Hibernation: A jumps to B, which saves A to a disk and powers off; a later boot resumes.

In A, ``khib hibernate`` sets the earlier image aside first, writes B's kernel and
initrd to the end of the device (the boot area) and jumps. In B, ``khib b-hibernate``
takes the key A left in its status page (zeroing it there), checks that what it will
save is exactly A's memory, saves A sealed with the boot area's binding, and powers
off. A that runs again without having been resumed (B failed, B came back) sets the
image aside before it carries on: a resumable image never stays behind a live A.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from khib_tools import bootarea, config, kexec, system, window
from khib_tools.image import mark, retire
from khib_tools.jumping import HANDOFF, Failure, jump_now, load_b, prepare, window_span
from khib_tools.saving import save_command
from khib_tools.status import StatusPage

RESUMED = "resumed"  # what the resume leaves in A's status page before it enters A
LOW_RAM = (0x1000, 0xA0000)  # 4 KiB-640 KiB: B's, by its memmap= (jump.md's contract)


def own_device(device: str) -> None:
    """The device is a block device nothing else holds (not mounted, not swap)."""
    if not Path(device).exists():
        raise Failure(f"{device} does not exist: attach a disk for the image (in QEMU, "
                      "`khib-build boot --disk FILE` attaches FILE as /dev/vda)")
    if not Path(device).is_block_device():
        raise Failure(f"{device} is not a block device: khib hibernate writes the image and "
                      "B's boot area to a whole disk or partition")
    try:
        os.close(os.open(device, os.O_RDWR | os.O_EXCL))
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise Failure(f"{device} is in use (mounted, a swap device, or held by another "
                          "program): khib hibernate needs a device of its own") from exc
        raise


def configured(args: argparse.Namespace) -> None:
    """What --config gives, where the command line did not; the device by its kernel name
    (B has no /dev/disk/by-*: it finds the device by the name A's kernel gave it)."""
    given = config.read(args.config) if args.config else {}
    for name in ("device", "key", "kernel", "initrd"):
        if getattr(args, name) is None and name.upper() in given:
            setattr(args, name, given[name.upper()])
    if args.window is None and "WINDOW" in given:
        try:
            args.window = window.parse(given["WINDOW"])
        except window.WindowError as exc:
            raise Failure(f"{args.config}: WINDOW: {exc}") from exc
    if not args.device:
        raise Failure("no device to hibernate to: give --device, or DEVICE in --config's file")
    if args.config and not system.parkable_cpus():  # this command line is the resume's
        raise Failure("this CPU parks offline CPUs with MWAIT, which a resume boot with "
                      "this command line would wake by restoring the memory they watch: "
                      "boot with maxcpus=1 (the others can be brought online after boot)")
    args.device = os.path.realpath(args.device)


def hibernate(args: argparse.Namespace) -> int:
    """Jump to B, which saves A to the device and powers off; return once A resumes.
    Whatever else happens, the image is set aside and the key gone from A's memory."""
    configured(args)
    device = args.device
    own_device(device)
    prepare(args)
    # Stopped (a cancelled job): still through the finally below, never with B loaded.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    kernel = Path(args.kernel).read_bytes()  # once: the boot area holds what B ran
    status = StatusPage(window_span(args.window))
    nonce = secrets.token_hex(16)
    verdict = ""
    try:
        if args.key:
            status.put_key(args.key)
        mark(device, bytes(4))  # an earlier image no longer counts, before anything else
        loaded = load_b(args, status, f"khib b-hibernate {device}",
                        {"device": device, "keyed": bool(args.key)}, (f"khib.nonce={nonce}",),
                        kernel)
        limit = bootarea.write(device, bootarea.boot_area(
            kernel, loaded.initrd, loaded.cmdline, args.window, nonce))
        print(f"khib: hibernating to {device} (room for a {limit >> 20} MiB image)",
              flush=True)
        os.sync()  # what A wrote is on disk, should this image never be resumed
        with contextlib.suppress(OSError):  # and clean caches (an initramfs's key) go
            Path("/proc/sys/vm/drop_caches").write_text("1")
        verdict = jump_now(args, status)
    finally:
        status.clear_key()
        aside: OSError | None = None
        if verdict != RESUMED:  # whatever B wrote, A carries on: it is never resumed
            try:
                mark(device, bytes(4))
            except OSError as exc:
                aside = exc
        kexec.run("kexec", "-u")  # B's pages back to A; no stray kexec -e enters B again
    if aside:
        raise Failure(f"hibernation failed, A carries on, and the image on {device} could "
                      f"not be set aside ({aside}): it may be resumable; do not resume from "
                      f"{device} (B's verdict: {verdict or 'none'})")
    if verdict != RESUMED:
        raise Failure(f"hibernation failed, A carries on (the image on {device} is set "
                      f"aside): {verdict}")
    retire(device)  # the used image's seal goes too
    print(f"khib: resumed from hibernation ({device})", flush=True)
    return 0


def expected_cover(a_ram: list[tuple[int, int]], window: tuple[int, int], kept_low: bool
                   ) -> list[list[int]]:
    """What the image must hold of A: its System RAM less the window, and less 4 KiB-640
    KiB unless B kept it (jump.md's contract), as [start, end) ranges; khib-save checks its
    image against it (--cover) before anything after the data is written."""
    cover = [[start, end + 1] for start, end in a_ram]
    holes = [(window[0], window[0] + window[1])] + ([] if kept_low else [LOW_RAM])
    for hole in holes:
        cut = []
        for start, end in cover:
            cut += [[s, e] for s, e in ((start, min(end, hole[0])), (max(start, hole[1]), end))
                    if s < e]
        cover = cut
    return cover


def wipe(path: Path) -> None:
    """Zeros over a file's bytes where they are (truncating would free its pages as
    they are: memory that goes back to A when B returns)."""
    with path.open("r+b") as handle:
        handle.write(bytes(path.stat().st_size))


def streamed(command: list[str]) -> tuple[int, str]:
    """Run a command, its standard error shown on the console as it comes (the save's
    progress: B's own standard error is kept for its verdict); its exit status and last
    line, which a failure passes on."""
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    last = ""
    assert process.stderr is not None
    for line in process.stderr:
        sys.stdout.write(line)
        sys.stdout.flush()
        last = line.strip() or last
    return process.wait(), last


def b_hibernate(args: argparse.Namespace) -> int:
    """In B: save A with what a resume needs, then power off (a failure returns to A)."""
    entry = system.cmdline_arg("kexec_jump_back_entry")
    handle = system.cmdline_arg("khib.status")
    nonce = system.cmdline_arg("khib.nonce")
    if not entry or not handle or not nonce:
        raise Failure("not a kernel that khib hibernate started")
    record = json.loads((HANDOFF / "jump.json").read_text())
    try:
        area = bootarea.read(args.device)
    except bootarea.NoBootArea as exc:
        raise Failure(str(exc)) from exc
    if area.nonce != nonce:
        raise Failure(f"the boot area on {args.device} is not this hibernation's")
    if not system.KEPT_LOW.exists():  # a resumed SMP A would need its trampoline there
        raise Failure(f"this kernel keeps no copy of A's memory below 640 KiB "
                      f"({system.KEPT_LOW}: khib's B kernel has it): the image could not "
                      "give A its real-mode trampoline back")
    expected = expected_cover([tuple(r) for r in record["ranges"]], tuple(record["window"]),
                              system.KEPT_LOW.exists())
    with tempfile.TemporaryDirectory(prefix="khib-") as folder:
        cover = Path(folder) / "cover"
        cover.write_text("".join(f"{start:x}-{end - 1:x}\n" for start, end in expected))
        key = Path(folder) / "key" if record.get("keyed") else None
        if key:  # zeroed in A's page: the image holds no copy of it
            taken = subprocess.run(["khib-report", handle, "--take-key", str(key)],
                                   capture_output=True, text=True, check=False)
            if taken.returncode:
                raise Failure(f"cannot take the key A left: {taken.stderr.strip()}")
        meta = Path(folder) / "meta.json"
        meta.write_text(json.dumps({**record, "entry": entry,
                                    "control_page": int(entry, 16) & ~0xFFF,
                                    "boot_area": area.binding()}))
        command = [*save_command(args.device, meta, area.limit, str(key) if key else None,
                                 vmcore=False), "--cover", str(cover)]
        try:
            code, last = streamed(command)
        finally:
            if key and key.exists():  # B's memory goes back to A if B returns
                wipe(key)
    if code < 0:
        raise Failure(f"khib-save was ended by signal {-code}")
    if code:  # its last words say why
        raise Failure(last or f"khib-save exited {code}")
    os.sync()
    print("khib: A is saved; powering off", flush=True)
    subprocess.run(["poweroff", "-f"], check=False)
    mark(args.device, bytes(4))  # still here: never leave an image behind a returning B
    return 1
