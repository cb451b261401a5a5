"""A power cut during a hibernation, at five points spread over the save (x86_64, QEMU
TCG, 512 MiB, 2 CPUs): QEMU is stopped at each point through its monitor and the disk
copied as it is then, which is what the disk holds after a cut there. One boot of the
khib kernel then tries to resume from each copy: every one refuses (nothing complete)
and the machine boots normally."""

from __future__ import annotations

import re
import selectors
import socket
import subprocess
import time
from pathlib import Path

import pytest

from khib_build.kernel.boot import kernel_cmdline, qemu_command, qemu_for
from tests.guest import CPUS, MEMORY, WINDOW, Target, a_initrd, disk, target_for
from tests.helpers import khib

pytestmark = pytest.mark.slow

# A as the image boots it: what a cut leaves depends on the save's steps, not on A's load.
A_SCRIPT = f"""#!/bin/sh
khib hibernate --kernel /boot/bzImage --initrd /boot/initrd --window {WINDOW} --device /dev/vda
"""
# Where the power goes: A has set the old image aside and written the boot area; then
# four points in B's save, from the first MiB of data to the last before the trailer.
POINTS = ("khib: hibernating to /dev/vda", "khib: saved 64/", "khib: saved 192/",
          "khib: saved 320/", "khib: saved 384/")
NORMAL = "echo NORMAL-$((1 + 1))-BOOT"


@pytest.fixture(params=["x86_64"])
def target(request: pytest.FixtureRequest) -> Target:
    return target_for(request)


class Monitor:
    """QEMU's human monitor on a unix socket: a command, then its prompt."""

    def __init__(self, path: Path) -> None:
        for _ in range(200):
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                time.sleep(0.05)
        self.read()

    def read(self) -> str:
        text = b""
        while not text.endswith(b"(qemu) "):
            text += self.sock.recv(4096)
        return text.decode(errors="replace")

    def command(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")
        self.read()


def cut_copies(target: Target, folder: Path) -> tuple[list[Path], str]:
    """Run A's hibernation, copying the disk at each of POINTS with the machine stopped;
    the copies and the console."""
    vda = disk(folder / "vda.img", 512)
    initrd = a_initrd(target, folder, A_SCRIPT, {})
    monitor_path = folder / "monitor.sock"
    command = [*qemu_command(qemu_for(target.kernel), target.kernel, initrd,
                             kernel_cmdline("/boot/a.sh"), MEMORY, (vda,), CPUS),
               "-monitor", f"unix:{monitor_path},server=on,wait=off"]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    assert process.stdout is not None
    monitor, console, copies = Monitor(monitor_path), b"", []
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 900
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if not selector.select(1.0):
                continue
            console += process.stdout.read1(65536)
            while len(copies) < len(POINTS) and POINTS[len(copies)].encode() in console:
                monitor.command("stop")  # the power goes here ...
                copies.append(folder / f"cut-{len(copies)}.img")
                subprocess.run(["cp", "--sparse=always", vda, copies[-1]], check=True)
                monitor.command("cont")  # ... and this run goes on, to a whole image
        console += process.stdout.read()
    finally:
        process.kill()
        process.wait()
    return copies, console.decode(errors="replace")


def test_a_power_cut_during_the_save_leaves_nothing_to_resume(target: Target,
                                                               tmp_path: Path) -> None:
    copies, console = cut_copies(target, tmp_path)
    assert len(copies) == len(POINTS), console[-6000:]
    assert "khib: A is saved; powering off" in console, console[-6000:]
    run = "; ".join(f"khib resume /dev/vd{letter}" for letter in "bcde") + f"; {NORMAL}"
    result = khib("boot", "-c", target.config, "--kernel", target.kernel, "--image",
                  target.image, "--memory", MEMORY, "--cpus", CPUS,
                  *[arg for copy in copies for arg in ("--disk", copy)],
                  "--append", "khib.resume=/dev/vda maxcpus=1", "--run", run,
                  "--expect", "khib: run exited 0", "--timeout", 600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr
    refusals = re.findall(r"khib: not resuming: no complete image \(a save did not finish",
                          result.stdout)
    assert len(refusals) == len(POINTS), result.stdout[-6000:]
    assert "NORMAL-2-BOOT" in result.stdout and "entering it" not in result.stdout
