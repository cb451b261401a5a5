"""Hibernation across a power-off, on the kernels khib-build built (x86_64 and i386),
QEMU TCG, 512 MiB: A (64 MiB in a tmpfs file, 32 MiB in a process, a token in a shell
variable) runs ``khib hibernate --device /dev/vda``; B saves A and powers off, and that
QEMU process ends. A new QEMU process boots the khib kernel and the default image with
``khib.resume=/dev/vda``, and A carries on. Then the refusals: a second resume from the
same disk, another memory size, a flipped byte in the image, each a normal boot."""

from __future__ import annotations

import re
import secrets
import shutil
from pathlib import Path

import pytest

from tests.conftest import khib
from tests.guest import (
    CPUS,
    MEMORY,
    WINDOW,
    Target,
    a_initrd,
    a_script,
    assert_a_intact,
    disk,
    target_for,
)
from tests.test_core import loads

pytestmark = pytest.mark.slow

A_BODY = f"""
echo "A-USED $(free | awk 'NR == 2 {{print int(($2 - $7) / 1024)}}') MiB"  # total less available
khib hibernate --kernel /boot/bzImage --initrd /boot/initrd --window {WINDOW} --device /dev/vda
echo "A-JUMP hibernate result=$?"; check hibernate
echo "A-UPTIME after $(cut -d ' ' -f 1 /proc/uptime) $(cat /proc/sys/kernel/random/boot_id)"
"""
NORMAL = "echo NORMAL-$((1 + 1))-BOOT"  # what a boot that does not resume runs (and prints)


@pytest.fixture(params=["x86_64", "i386"])
def target(request: pytest.FixtureRequest) -> Target:
    return target_for(request)


def resume_boot(target: Target, vda: Path, memory: int = MEMORY) -> str:
    """Boot the khib kernel and default image with khib.resume=/dev/vda; the console."""
    result = khib("boot", "-c", target.config, "--kernel", target.kernel, "--image",
                  target.image, "--memory", memory, "--cpus", CPUS, "--disk", vda,
                  "--append", "khib.resume=/dev/vda", "--run", NORMAL,
                  "--expect", "khib: run exited 0", "--timeout", 900)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr
    return result.stdout


def test_hibernate_power_off_and_resume(target: Target, tmp_path: Path) -> None:
    token = f"tok-{secrets.token_hex(12)}"
    vda = disk(tmp_path / "vda.img", 512)
    initrd = a_initrd(target, tmp_path, a_script(token, A_BODY), {})
    first = khib("boot", "-c", target.config, "--kernel", target.kernel, "--image", initrd,
                 "--memory", MEMORY, "--cpus", CPUS, "--disk", vda, "--run", "/boot/a.sh",
                 "--expect", "khib: A is saved; powering off", "--timeout", 900)
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr
    assert "reboot: Power down" in first.stdout  # B powered the machine off
    assert "A-JUMP" not in first.stdout  # A did not come back in this power cycle
    saved = tmp_path / "saved.img"
    shutil.copyfile(vda, saved)

    second = resume_boot(target, vda)
    tail = second[-8000:]
    # The resume boot checked the image, moved into B's window, wrote A back, entered A.
    whole = second.index("khib: the image on /dev/vda is whole")
    entering = second.index("khib: A is back in memory; entering it")
    resumed = second.index("khib: resumed from hibernation (/dev/vda)")
    assert whole < entering < resumed < second.index("A-JUMP hibernate result=0"), tail
    assert "NORMAL-2-BOOT" not in second, tail
    console = first.stdout + second
    assert_a_intact(console, ["hibernate"])
    assert f"token={token}" in second, tail  # the shell variable survived
    before = re.search(r"A-UPTIME before ([\d.]+) (\S+)", console)
    after = re.search(r"A-UPTIME after ([\d.]+) (\S+)", console)
    assert before and after, tail
    assert after[2] == before[2]  # the same boot of A ...
    assert float(after[1]) > float(before[1])  # ... its clock going on

    # Refusals, each a normal boot, nothing written into memory:
    # (c) the image was used by the resume above;
    again = resume_boot(target, vda)
    assert "khib: not resuming: no hibernation image: the one here was used" in again
    assert "NORMAL-2-BOOT" in again
    # (b) another memory size;
    smaller = resume_boot(target, saved, memory=MEMORY - 128)
    assert re.search(r"khib: not resuming: this machine's RAM \(\d+ MiB in \d+ ranges\) is "
                     r"not the RAM A ran with", smaller), smaller[-4000:]
    assert "NORMAL-2-BOOT" in smaller
    # (a) one flipped byte inside stored data.
    segments, _ = loads(saved)
    data = [s for s in segments if s.filesz]
    stored = data[len(data) // 2]
    with saved.open("r+b") as image:
        image.seek(stored.offset + stored.filesz // 2)
        byte = image.read(1)[0]
        image.seek(-1, 1)
        image.write(bytes([byte ^ 0x01]))
    flipped = resume_boot(target, saved)
    assert re.search(rf"khib: not resuming: /dev/vda: segment \d+ \({stored.paddr:#x}-"
                     r"0x[0-9a-f]+\) does not match its checksum", flipped), flipped[-4000:]
    assert "NORMAL-2-BOOT" in flipped and "entering it" not in flipped
