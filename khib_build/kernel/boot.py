"""Boot an image in QEMU (TCG, serial console) and watch its console for a text."""

from __future__ import annotations

import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from khib_build.errors import KhibError, UsageError

GRACE_SECONDS = 15  # after the expected text: time for the image to power off by itself


@dataclass(frozen=True)
class BootResult:
    found: bool
    exited: bool  # QEMU ended by itself (the guest powered off or rebooted)
    console: str
    seconds: float


def kernel_cmdline(run: str | None, extra: str = "") -> str:
    """The kernel command line: serial console, no reboot loop, and ``khib.run=`` if asked."""
    parts = ["console=ttyS0", "panic=-1"]
    if run is not None:
        if '"' in run or "\n" in run:
            raise UsageError("--run: the kernel command line cannot carry double quotes or "
                             "newlines; use single quotes inside the command")
        parts.append(f'khib.run="{run}"')
    if extra:
        parts.append(extra)
    return " ".join(parts)


def qemu_for(kernel: Path) -> str:
    """qemu-system-x86_64 for a 64-bit bzImage, qemu-system-i386 for a 32-bit one (the
    boot protocol's xloadflags bit 0 says whether the kernel has a 64-bit entry)."""
    with kernel.open("rb") as handle:
        header = handle.read(0x240)
    is_bzimage = header[0x202:0x206] == b"HdrS"
    return "qemu-system-x86_64" if not is_bzimage or header[0x236] & 1 else "qemu-system-i386"


B_KERNEL, B_INITRD = "boot/bzImage", "boot/khib-rootfs.gz"  # where `khib` looks for B


def with_b(image: Path, kernel: Path, output: Path, epoch: int) -> Path:
    """``image`` with an uncompressed segment holding ``kernel`` and the image itself at
    B_KERNEL and B_INITRD: a guest that can jump to (and hibernate through) its own kernel
    and image, as `khib jump` and `khib hibernate` find them by default."""
    from khib_build.image.cpio import scan, write_archive

    data = image.read_bytes()
    with tempfile.TemporaryDirectory(prefix="khib-b-") as folder:
        tree = Path(folder)
        (tree / "boot").mkdir()
        for name, source in ((B_KERNEL, kernel), (B_INITRD, image)):
            shutil.copyfile(source, tree / name)
            (tree / name).chmod(0o644)
        (tree / "boot").chmod(0o755)
        with output.open("wb") as out:
            out.write(data + b"\0" * (-len(data) % 4))
            write_archive(scan(tree).values(), out, epoch)
    return output


def qemu_command(qemu: str, kernel: Path, initrd: Path, cmdline: str, memory: int,
                 disks: tuple[Path, ...] = (), cpus: int = 1) -> list[str]:
    command = [qemu, "-m", str(memory), "-smp", str(cpus), "-nographic", "-no-reboot",
               "-kernel", str(kernel), "-initrd", str(initrd), "-append", cmdline]
    if memory > 4096:
        # QEMU's default i386 CPU (qemu32) has 32 physical address bits: a PAE kernel
        # faults on its first page above 4 GiB ("unable to handle page fault ... not-present
        # page" while unpacking the initramfs). Its most capable model has more.
        command += ["-cpu", "max"]
    for disk in disks:  # raw virtio disks: /dev/vda, /dev/vdb, ... in the guest
        command += ["-drive", f"file={disk},format=raw,if=virtio"]
    return command


def boot(command: list[str], expect: str | None, timeout: float, echo: bool = False,
         log: Path | None = None) -> BootResult:
    """Run QEMU until it exits, the timeout passes, or (after ``expect``) a grace period ends."""
    if shutil.which(command[0]) is None:
        raise KhibError(f"{command[0]} not found; install qemu-system-x86 (make setup does)")
    started = time.monotonic()
    deadline = started + timeout
    console = bytearray()
    found = False
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if not selector.select(min(remaining, 1.0)):
                continue
            block = os.read(process.stdout.fileno(), 65536)
            if not block:
                break
            console += block
            if echo:
                sys.stdout.buffer.write(block)
                sys.stdout.flush()
            if not found and expect is not None and expect.encode() in console:
                found = True
                deadline = min(deadline, time.monotonic() + GRACE_SECONDS)
    finally:
        selector.close()
        exited = process.poll() is not None or wait_briefly(process)
        if not exited:
            process.kill()
            process.wait()
        process.stdout.close()
    text = console.decode(errors="replace").replace("\r\n", "\n")
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(text)
    return BootResult(found, exited, text, time.monotonic() - started)


def wait_briefly(process: subprocess.Popen[bytes]) -> bool:
    try:
        process.wait(timeout=2)
        return True
    except subprocess.TimeoutExpired:
        return False
