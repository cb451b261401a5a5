"""The default image boots on Debian's amd64 kernel and runs what khib.run= asks."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import DEFAULT_CONFIG, REPO, X86_64_CONFIG, assert_ok, khib

pytestmark = pytest.mark.slow

PROBE = (
    "echo uname=$(uname -m); "
    "echo elfclass=$(xxd -s 4 -l 1 -p /bin/busybox); "
    "echo root=$(ls / | tr '\\n' ,); "
    "echo console=$(stat -c %F,%t,%T /dev/console); "
    "echo KHIB-MARKER-OK"
)


def test_default_image_boots_and_powers_off(default_image: Path, debian_kernel: Path) -> None:
    result = khib("boot", "-c", DEFAULT_CONFIG, "--kernel", debian_kernel, "--image",
                  default_image, "--run", PROBE, "--expect", "khib: run exited 0",
                  "--timeout", 180)
    console = result.stdout
    assert result.returncode == 0, console[-3000:] + result.stderr
    assert "khib: khib 0.1 (i386), busybox 1.35.0" in console  # the banner from /init
    assert "uname=x86_64" in console  # an i386 program on the amd64 kernel sees x86_64 ...
    assert "elfclass=01" in console  # ... but /bin/busybox is ELF32 (class 1)
    assert "root=bin,dev,etc,init,mnt,proc,root,run,sbin,sys,tmp,usr," in console
    assert "console=character special file,5,1" in console
    assert "KHIB-MARKER-OK" in console
    assert "reboot: Power down" in console  # poweroff -f ended QEMU, not the timeout


def test_x86_64_image_boots(image_x86_64: Path, debian_kernel: Path) -> None:
    result = khib("boot", "-c", X86_64_CONFIG, "--kernel", debian_kernel, "--image",
                  image_x86_64, "--run", PROBE, "--expect", "khib: run exited 0",
                  "--timeout", 180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "khib: khib 0.1 (x86_64), busybox 1.35.0" in result.stdout
    assert "elfclass=02" in result.stdout  # ELF64
    assert "KHIB-MARKER-OK" in result.stdout


def test_boot_fails_when_the_text_never_appears(default_image: Path, debian_kernel: Path
                                                ) -> None:
    result = khib("boot", "--quiet", "-c", DEFAULT_CONFIG, "--kernel", debian_kernel,
                  "--image", default_image, "--run", "echo something-else",
                  "--expect", "NEVER-PRINTED", "--timeout", 120)
    assert result.returncode == 1
    assert "'NEVER-PRINTED' NOT found" in result.stderr


def test_a_boot_without_a_command_says_why_it_was_stopped(default_image: Path,
                                                          debian_kernel: Path) -> None:
    """No --run and no --expect: the guest idles at its shell until the timeout, and
    khib-build says so and what to give; -v shows the QEMU command it ran."""
    result = khib("boot", "-v", "-c", DEFAULT_CONFIG, "--kernel", debian_kernel,
                  "--image", default_image, "--timeout", 8)
    assert result.returncode == 1
    assert f"khib-build boot: qemu-system-x86_64 -m 512 -smp 1 -nographic -no-reboot -kernel " \
           f"{debian_kernel} -initrd {default_image}" in result.stderr
    assert ("khib-build boot: the guest still ran after 8 s and was stopped; give it a "
            "command (--run CMD") in result.stderr


@pytest.mark.parametrize("fmt", ["gzip", "xz", "zstd", "lz4", "bzip2", "lzma"])
def test_each_compression_boots_with_segments_around_it(fmt: str, default_image: Path,
                                                        debian_kernel: Path,
                                                        tmp_path: Path) -> None:
    """The kernel unpacks an early uncompressed segment, the image, and a segment after it."""
    early = tmp_path / "early" / "kernel" / "x86" / "microcode"
    early.mkdir(parents=True)
    (early / "GenuineIntel.bin").write_bytes(b"not really microcode\n")
    image = tmp_path / f"rootfs.{fmt}"
    assert_ok(khib("pack", default_image.parent / "rootfs", "-o", image, "--compress", fmt,
                   "--device-table", REPO / "configs" / "device_table.txt",
                   "--early", tmp_path / "early"))
    extra = tmp_path / "extra"
    (extra / "etc").mkdir(parents=True)
    (extra / "etc" / "khib-extra").write_text(f"appended-after-{fmt}\n")
    assert_ok(khib("pack", extra, "-o", tmp_path / "extra.cpio", "--compress", "none"))
    data = image.read_bytes()
    combined = tmp_path / "combined"
    # An uncompressed segment must start on a 4-byte boundary; zeros between are skipped.
    combined.write_bytes(data + b"\0" * (-len(data) % 4) + (tmp_path / "extra.cpio").read_bytes())
    result = khib("boot", "-c", DEFAULT_CONFIG, "--kernel", debian_kernel, "--image", combined,
                  "--run", "cat /etc/khib-extra /kernel/x86/microcode/GenuineIntel.bin",
                  "--expect", "khib: run exited 0", "--timeout", 180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert f"appended-after-{fmt}" in result.stdout
    assert "not really microcode" in result.stdout
    assert "Initramfs unpacking failed" not in result.stdout
