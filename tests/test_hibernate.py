"""Hibernation across a power-off, on the kernels khib-build built (x86_64 and i386),
QEMU TCG, 512 MiB: A (32 MiB in a tmpfs file, 16 MiB in a process, a token in a shell
variable) runs ``khib hibernate --device /dev/vda --key FILE``; B saves A, sealed with the
key, and powers off, and that QEMU process ends. New QEMU processes boot the khib kernel
and the default image with the key in its initramfs and ``khib.resume=/dev/vda``: a copy
of the image whose data was changed and resealed (every CRC-32 and the SHA-256
recomputed) and another memory size are refused, each a normal boot; then A resumes from
the good image and carries on; a second resume from the same disk is refused."""

from __future__ import annotations

import re
import secrets
import subprocess
from pathlib import Path

import pytest

from tests.guest import (
    CPUS,
    MEMORY,
    WINDOW,
    Target,
    a_initrd,
    a_script,
    appended,
    assert_a_intact,
    disk,
    target_for,
)
from tests.helpers import blocks, khib, loads, reseal

pytestmark = pytest.mark.slow

A_BODY = f"""
echo "A-USED $(free | awk 'NR == 2 {{print int(($2 - $7) / 1024)}}') MiB"  # total less available
printf %s "$(echo @KEY@)" > /tmp/hib.key
khib hibernate --kernel /boot/bzImage --initrd /boot/initrd --window {WINDOW} --device /dev/vda \
    --key /tmp/hib.key
echo "A-JUMP hibernate result=$?"; check hibernate
echo "A-UPTIME after $(cut -d ' ' -f 1 /proc/uptime) $(cat /proc/sys/kernel/random/boot_id)"
"""
NORMAL = "echo NORMAL-$((1 + 1))-BOOT"  # what a boot that does not resume runs (and prints)


@pytest.fixture(params=["x86_64", "i386"])
def target(request: pytest.FixtureRequest) -> Target:
    return target_for(request)


def resume_boot(target: Target, image: Path, vda: Path, memory: int = MEMORY) -> str:
    """Boot the khib kernel and ``image`` with khib.resume=/dev/vda; the console."""
    result = khib("boot", "-c", target.config, "--kernel", target.kernel, "--image",
                  image, "--memory", memory, "--cpus", CPUS, "--disk", vda,
                  "--append", "khib.resume=/dev/vda", "--run", NORMAL,
                  "--expect", "khib: run exited 0", "--timeout", 900)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr
    return result.stdout


def test_hibernate_power_off_and_resume(target: Target, tmp_path: Path) -> None:
    token, key = f"tok-{secrets.token_hex(12)}", secrets.token_hex(32)
    vda = disk(tmp_path / "vda.img", 512)
    initrd = a_initrd(target, tmp_path, a_script(token, A_BODY.replace("@KEY@", key)), {})
    first = khib("boot", "-c", target.config, "--kernel", target.kernel, "--image", initrd,
                 "--memory", MEMORY, "--cpus", CPUS, "--disk", vda, "--run", "/boot/a.sh",
                 "--expect", "khib: A is saved; powering off", "--timeout", 900)
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr
    assert "reboot: Power down" in first.stdout  # B powered the machine off
    assert "A-JUMP" not in first.stdout  # A did not come back in this power cycle
    assert re.search(r"khib-save: /dev/vda: .*, keyed", first.stdout), first.stdout[-4000:]
    saved = vda.read_bytes()
    area = saved[-(64 << 20):]  # the boot area (B's kernel and initrd) ...
    assert key.encode() not in area  # ... holds no copy of the key
    # The resume boots' initramfs: the default image with the key where a config puts it.
    keyed = tmp_path / "keyed-rootfs"
    keyed.write_bytes(appended(target.image.read_bytes(),
                               {"etc/khib/hibernate.key": key.encode()}, tmp_path))

    # Refusals first, each a normal boot with nothing written into memory:
    # (a) data changed and every CRC-32 and the SHA-256 seal recomputed: the HMAC fails;
    changed = tmp_path / "changed.img"
    at = next(b[0] for s in loads(saved)[0] if s.filesz for b in blocks(saved, s)
              if b[2])  # a block kept as it is (random data)
    subprocess.run(["cp", "--sparse=always", vda, changed], check=True)  # as sparse as vda
    with changed.open("r+b") as handle:
        handle.seek(at + 1000)
        handle.write(bytes([saved[at + 1000] ^ 0x01]))
    reseal(changed)
    refused = resume_boot(target, keyed, changed)
    assert "khib: not resuming: /dev/vda: the image fails its HMAC" in refused, refused[-4000:]
    assert "NORMAL-2-BOOT" in refused and "entering it" not in refused
    # (b) another memory size.
    smaller = resume_boot(target, keyed, vda, memory=MEMORY - 128)
    assert re.search(r"khib: not resuming: this machine's RAM \(\d+ MiB in \d+ ranges\) is "
                     r"not the RAM A ran with", smaller), smaller[-4000:]
    assert "NORMAL-2-BOOT" in smaller

    second = resume_boot(target, keyed, vda)
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

    # (c) the image was used by the resume above.
    again = resume_boot(target, keyed, vda)
    assert "khib: not resuming: no hibernation image: the one here was used" in again
    assert "NORMAL-2-BOOT" in again
