"""Kernels built by khib-build: they boot the default images, can jump, and are cached."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from khib_build.kernel.boot import qemu_for
from khib_build.kernel.kconfig import read_config
from tests.guest import appended
from tests.helpers import DEFAULT_CONFIG, X86_64_CONFIG, assert_ok, khib, khib_argv

pytestmark = pytest.mark.slow

# The guest's basics, one line each: CPUs online, entropy, the clock over a 3 s sleep (the
# guest's uptime and date, the host's wall clock between the two SLEEP lines), a child
# that sets a TERM handler and is signalled two seconds later, then reaped. One line
# without double quotes, for khib.run=.
PROBE = ("echo loader-options=$(kexec --help | grep -c -e --load-preserve-context "
         "-e --load-jump-back-helper); "
         "echo cpus-online=$(cat /sys/devices/system/cpu/online); "
         "echo random=$(head -c 16 /dev/urandom | xxd -p),$(head -c 16 /dev/urandom | xxd -p); "
         "echo SLEEP-START $(cut -d ' ' -f 1 /proc/uptime) $(date +%s); sleep 3; "
         "echo SLEEP-END $(cut -d ' ' -f 1 /proc/uptime) $(date +%s); "
         "sh -c 'trap exit\\ 7 TERM; while :; do sleep 1; done' & child=$!; sleep 2; "
         "kill -TERM $child; wait $child; echo child-status=$?; "
         "kill -0 $child 2>/dev/null && echo child-reaped=no || echo child-reaped=yes; "
         "echo KHIB-KERNEL-MARKER")


def timed_console(argv: list[str], cwd: Path) -> tuple[int, list[tuple[float, str]]]:
    """Run ``argv`` (a boot that echoes the console); each line with the host's time."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, errors="replace", cwd=cwd)
    assert process.stdout is not None
    lines = [(time.monotonic(), line.rstrip("\n")) for line in process.stdout]
    return process.wait(), lines


def sanity_failures(lines: list[tuple[float, str]], cpus: int) -> list[str]:
    """What is wrong with the guest's basics, one message per failed check."""
    text = "\n".join(line for _, line in lines)
    stamps = {line.split()[0]: (at, line.split()[1:]) for at, line in lines
              if line.startswith(("SLEEP-START ", "SLEEP-END "))}
    failures = []
    if "SLEEP-START" not in stamps or "SLEEP-END" not in stamps:
        return ["sleep: the guest printed no SLEEP-START/SLEEP-END lines"]
    (host0, (up0, date0)), (host1, (up1, date1)) = stamps["SLEEP-START"], stamps["SLEEP-END"]
    guest = float(up1) - float(up0)
    if not 2.5 <= guest <= 3.5:
        failures.append(f"sleep: `sleep 3` took {guest:.2f} s by the guest's /proc/uptime "
                        "(3 +- 0.5 s expected)")
    if not 2.5 <= host1 - host0 <= 10:
        failures.append(f"sleep: `sleep 3` took {host1 - host0:.2f} s by the host's clock "
                        "(2.5-10 s expected)")
    if int(date1) <= int(date0):
        failures.append(f"date: did not advance over the sleep ({date0} -> {date1})")
    child = re.search(r"^child-status=(\d+)$", text, re.MULTILINE)
    if not child or child[1] != "7":
        failures.append("child: a child signalled after 2 s did not exit through its TERM "
                        f"handler (status {child[1] if child else 'missing'}, 7 expected)")
    if not re.search(r"^child-reaped=yes$", text, re.MULTILINE):
        failures.append("child: the signalled child was not reaped")
    random = re.search(r"^random=([0-9a-f]{32}),([0-9a-f]{32})$", text, re.MULTILINE)
    if not random or random[1] == random[2]:
        failures.append("urandom: two 16-byte reads of /dev/urandom did not give two "
                        "different values")
    online = re.search(r"^cpus-online=(\S+)$", text, re.MULTILINE)
    expected = "0" if cpus == 1 else f"0-{cpus - 1}"
    if not online or online[1] != expected:
        failures.append(f"cpus: online {online[1] if online else 'missing'}, QEMU gave "
                        f"{cpus} ({expected} expected)")
    return failures


@pytest.mark.parametrize("arch", ["i386", "x86_64"])
def test_built_kernel_boots_the_default_image(arch: str, request: pytest.FixtureRequest,
                                              tmp_path: Path) -> None:
    """Each kernel khib-build builds boots its default image, and its basics work."""
    kernel: Path = request.getfixturevalue(f"kernel_{arch}")
    image: Path = request.getfixturevalue("default_image" if arch == "i386"
                                          else "image_x86_64")
    config = read_config(kernel.parent / "kernel.full.config")
    assert config["KEXEC_JUMP"] == "y" and config["X86_64" if arch == "x86_64"
                                                  else "X86_32"] == "y"
    cpus = 2 if config.get("SMP") == "y" else 1
    # Without --kernel, boot takes output/bzImage, where `khib-build kernel` puts it.
    (tmp_path / "output").mkdir()
    (tmp_path / "output" / "bzImage").symlink_to(kernel)
    status, lines = timed_console(khib_argv(
        "boot", "-c", DEFAULT_CONFIG if arch == "i386" else X86_64_CONFIG, "--image", image,
        "--cpus", cpus, "--run", PROBE, "--expect", "khib: run exited 0", "--timeout", 180),
        tmp_path)
    console = "\n".join(line for _, line in lines)
    assert status == 0, console[-3000:]
    assert f"khib: khib 0.1 ({arch})" in console
    assert "loader-options=2" in console and "KHIB-KERNEL-MARKER" in console
    assert "reboot: Power down" in console  # ACPI: poweroff ends QEMU
    assert "Linux version 6.1." in console
    failures = sanity_failures(lines, cpus)
    assert not failures, f"the {arch} kernel {kernel}:\n" + "\n".join(failures)
    # A 32-bit kernel boots in qemu-system-i386, as on a 32-bit machine.
    assert qemu_for(kernel) == ("qemu-system-i386" if arch == "i386" else "qemu-system-x86_64")


def test_an_unchanged_kernel_is_not_rebuilt(kernel_x86_64: Path, tmp_path: Path) -> None:
    result = khib("kernel", "-c", X86_64_CONFIG, "-o", tmp_path)
    assert_ok(result)
    assert "(cached," in result.stdout
    assert (tmp_path / "bzImage").read_bytes() == kernel_x86_64.read_bytes()


def jump_initrd(image: Path, kernel: Path, root: Path) -> Path:
    """The image with a segment appended that holds a kernel and an initrd to load."""
    combined = root / "initrd-with-kernel"
    combined.write_bytes(appended(image.read_bytes(), {"boot/bzImage": kernel.read_bytes(),
                                                       "boot/initrd": image.read_bytes()}, root))
    return combined


LOAD = ("kexec --load-preserve-context --mem-min=0x10000000 --mem-max=0x13ffffff "
        "--initrd=/boot/initrd --append='console=ttyS0' /boot/bzImage; echo kexec-rc=$?")


def test_preserve_context_load_needs_the_khib_kernel(image_x86_64: Path, kernel_x86_64: Path,
                                                     debian_kernel: Path,
                                                     tmp_path: Path) -> None:
    initrd = jump_initrd(image_x86_64, kernel_x86_64, tmp_path)
    consoles = {}
    for name, kernel in (("khib", kernel_x86_64), ("debian", debian_kernel)):
        result = khib("boot", "-c", X86_64_CONFIG, "--kernel", kernel, "--image", initrd,
                      "--run", LOAD, "--expect", "kexec-rc=", "--timeout", 240)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr
        consoles[name] = result.stdout
    assert "kexec-rc=0" in consoles["khib"], consoles["khib"][-3000:]
    assert "kexec_load failed: Invalid argument" in consoles["debian"]
    assert "kexec-rc=0" not in consoles["debian"]
