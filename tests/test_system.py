"""A real Debian system hibernates with khib (tests/system.py makes it, QEMU TCG x86_64,
1 GiB, 2 CPUs): the khib package installed with dpkg, A's kernel a distribution-like
7.2 with Debian's own initramfs. A service writes a file on ext4 and a user's process
holds 32 MiB and a token; `systemctl hibernate`, and the QEMU process ends by itself.
A new one boots the same kernel and initramfs: its khib hook resumes A, which finds its
file, its process's memory and its token, says it is running, logs the hibernation and
the resume, and shuts down cleanly (fsck finds nothing). A copy with one byte of the
image changed boots normally instead, the image set aside (the next boot does not try
it)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests import system
from tests.conftest import built_once
from tests.guest import head
from tests.helpers import X86_64_CONFIG, assert_ok, blocks, fmt, image_of, khib, loads
from tests.test_kernels import matrix_kernel

pytestmark = pytest.mark.slow

MEMORY, CPUS = 1024, 2
KHIB_AT = system.MiB + system.ROOT_SIZE  # partition 2, where the image starts
APPEND = f"{system.ROOT_APPEND} systemd.wants=khib-scenario.service"
REPORT = f"{APPEND} khib.scenario=report"  # a normal boot says how it went


@pytest.fixture(scope="module")
def debian(tmp_path_factory: pytest.TempPathFactory) -> system.System:
    kernel = matrix_kernel(tmp_path_factory, "a-7.2-x86_64")[0] / "bzImage"
    deb = built_once(tmp_path_factory, "khib-deb", lambda folder: assert_ok(
        khib("deb", "-c", X86_64_CONFIG, "-o", folder, timeout=3600)))
    made = system.system(kernel, next(deb.glob("khib_*.deb")))
    # Its own copies (the disk is the one the tests change): another run that makes
    # another system replaces the cached one.
    folder = tmp_path_factory.mktemp("debian")
    for path in (made.disk, made.kernel, made.initrd):
        subprocess.run(["cp", "--sparse=always", str(path), str(folder)], check=True)
    return made._replace(disk=folder / made.disk.name, kernel=folder / made.kernel.name,
                         initrd=folder / made.initrd.name)


def boot(debian: system.System, disk: Path, append: str) -> str:
    """One QEMU process on ``disk``, until the system powers off; its console."""
    done = khib("boot", "-c", X86_64_CONFIG, "--kernel", debian.kernel, "--image",
                debian.initrd, "--disk", disk, "--memory", MEMORY, "--cpus", CPUS,
                "--append", append, "--expect", "reboot: Power down", "--timeout", 1800,
                timeout=2000)
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr
    return done.stdout


def fsck_clean(disk: Path, folder: Path) -> None:
    """e2fsck -fn on the root partition: no error."""
    part = folder / "root.ext4"
    subprocess.run(["dd", f"if={disk}", f"of={part}", "bs=1M", "skip=1",
                    f"count={system.ROOT_SIZE >> 20}", "conv=sparse", "status=none"],
                   check=True)
    checked = subprocess.run(["e2fsck", "-fn", str(part)], capture_output=True, text=True,
                             check=False)
    part.unlink()
    assert checked.returncode == 0, checked.stdout + checked.stderr


def said(pattern: str, console: str) -> re.Match[str]:
    found = re.search(pattern, console)
    assert found, f"{pattern!r} not on the console\n{console[-8000:]}"
    return found


@pytest.fixture(scope="module")
def hibernated(debian: system.System) -> tuple[Path, str]:
    """The system's disk (this run's copy) after `systemctl hibernate`, and that boot's
    console."""
    disk = debian.disk
    console = boot(debian, disk, APPEND)
    said(r"SCENARIO ready state=running ", console)
    said(r"khib: A is saved; powering off", console)
    assert "SCENARIO hibernate result" not in console, console[-6000:]
    return disk, console


def test_the_package_installs_purges_and_installs_again(debian: system.System) -> None:
    record = debian.record
    assert "usr/sbin/khib" in record["installed"], record["installed"]
    assert record["key"] == {"size": 64, "mode": "0o600"}  # made by its postinst
    assert record["left_after_purge"] == [] and record["gone_after_purge"] == [], record
    listed = str(record["initramfs"])
    for member in ("usr/sbin/khib", "usr/lib/khib/bin/kexec", "usr/lib/khib/bin/khib-core",
                   "etc/khib/hibernate.key", "scripts/local-premount/khib", "usr/bin/python3"):
        assert re.search(rf"^{re.escape(member)}$", listed, re.M), member


def test_systemctl_hibernate_then_the_initramfs_resumes_it(
        debian: system.System, hibernated: tuple[Path, str]) -> None:
    disk, first = hibernated
    holder = said(r"SCENARIO HOLDER uid=65534 sha256=(\w+) token=([\w-]+)", first)
    token = said(r"SCENARIO ready state=running token=([\w-]+)", first)[1]
    assert holder[2] == token
    folder = disk.parent
    # Kept for the refusal: the same image, before its resume uses it.
    changed = folder / "changed.img"
    subprocess.run(["cp", "--sparse=always", str(disk), str(changed)], check=True)

    second = boot(debian, disk, REPORT)
    said(r"khib: the image on /dev/vda2 is whole; moving into the window", second)
    said(r"khib: A is back in memory; entering it", second)
    assert "SCENARIO booted" not in second, second[-6000:]  # no normal boot: A resumed
    assert said(r"SCENARIO hibernate result=(\w+)", second)[1] == "success"
    after = said(r"SCENARIO HOLDER-AFTER uid=65534 sha256=(\w+) token=([\w-]+)", second)
    assert (after[1], after[2]) == (holder[1], token)
    said(rf"SCENARIO file written by khib-scenario.service: {token}", second)
    said(rf"SCENARIO after state=running cpus=0-{CPUS - 1} ", second)
    journal = said(r"SCENARIO journal hibernating=(\d+) resumed=(\d+) hooks=(\d+),(\d+)",
                   second)
    assert journal.groups() == ("1", "1", "1", "1"), journal[0]
    assert head(disk, 4, KHIB_AT) == fmt.USED_MAGIC
    fsck_clean(disk, folder)
    refused_and_set_aside(debian, changed)


def refused_and_set_aside(debian: system.System, disk: Path) -> None:
    """One byte of the image's data changed: a normal boot, the image set aside, and the
    next boot does not try it."""
    image = image_of(disk, KHIB_AT)
    at = next(b[0] for s in loads(image)[0] if s.filesz for b in blocks(image, s) if b[2])
    with disk.open("r+b") as handle:
        handle.seek(KHIB_AT + at + 1000)
        byte = handle.read(1)[0]
        handle.seek(KHIB_AT + at + 1000)
        handle.write(bytes([byte ^ 0x01]))
    console = boot(debian, disk, REPORT)
    lines = re.findall(r"khib: not resuming: .*", console)
    assert len(lines) == 1 and "(the image on /dev/vda2 is set aside)" in lines[0], lines
    # The CPU the first stage took offline is back for the normal boot.
    said(rf"SCENARIO booted state=running cpus=0-{CPUS - 1} ", console)
    assert head(disk, 4, KHIB_AT) == fmt.ASIDE_MAGIC
    again = boot(debian, disk, REPORT)
    assert "khib: " not in again.replace("khib-scenario", ""), again[-6000:]
    said(r"SCENARIO booted state=running ", again)
    fsck_clean(disk, disk.parent)
