"""Kernels built by khib-build: they boot the default images, can jump, and are cached."""

from __future__ import annotations

from pathlib import Path

import pytest

from khib_build.kconfig import read_config
from khib_build.qemu import qemu_for
from tests.conftest import DEFAULT_CONFIG, X86_64_CONFIG, assert_ok, khib

pytestmark = pytest.mark.slow

PROBE = ("echo loader-options=$(kexec --help | grep -c -e --load-preserve-context "
         "-e --load-jump-back-helper); echo KHIB-KERNEL-MARKER")


@pytest.mark.parametrize("arch", ["i386", "x86_64"])
def test_built_kernel_boots_the_default_image(arch: str, request: pytest.FixtureRequest,
                                              tmp_path: Path) -> None:
    kernel: Path = request.getfixturevalue(f"kernel_{arch}")
    image: Path = request.getfixturevalue("default_image" if arch == "i386"
                                          else "image_x86_64")
    config = read_config(kernel.parent / "kernel.full.config")
    assert config["KEXEC_JUMP"] == "y" and config["X86_64" if arch == "x86_64"
                                                  else "X86_32"] == "y"
    # Without --kernel, boot takes output/bzImage, where `khib-build kernel` puts it.
    (tmp_path / "output").mkdir()
    (tmp_path / "output" / "bzImage").symlink_to(kernel)
    result = khib("boot", "-c", DEFAULT_CONFIG if arch == "i386" else X86_64_CONFIG,
                  "--image", image, "--run", PROBE, "--expect", "khib: run exited 0",
                  "--timeout", 180, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert f"khib: khib 0.1 ({arch})" in result.stdout
    assert "loader-options=2" in result.stdout and "KHIB-KERNEL-MARKER" in result.stdout
    assert "reboot: Power down" in result.stdout  # ACPI: poweroff ends QEMU
    assert "Linux version 6.1." in result.stdout
    # A 32-bit kernel boots in qemu-system-i386, as on a 32-bit machine.
    assert qemu_for(kernel) == ("qemu-system-i386" if arch == "i386" else "qemu-system-x86_64")


def test_an_unchanged_kernel_is_not_rebuilt(kernel_x86_64: Path, tmp_path: Path) -> None:
    result = khib("kernel", "-c", X86_64_CONFIG, "-o", tmp_path)
    assert_ok(result)
    assert "(cached," in result.stdout
    assert (tmp_path / "bzImage").read_bytes() == kernel_x86_64.read_bytes()


def jump_initrd(image: Path, kernel: Path, root: Path) -> Path:
    """The image with a segment appended that holds a kernel and an initrd to load."""
    extra = root / "extra"
    (extra / "boot").mkdir(parents=True)
    (extra / "boot" / "bzImage").write_bytes(kernel.read_bytes())
    (extra / "boot" / "initrd").write_bytes(image.read_bytes())
    assert_ok(khib("pack", extra, "-o", root / "extra.cpio", "--compress", "none"))
    data = image.read_bytes()
    combined = root / "initrd-with-kernel"
    combined.write_bytes(data + b"\0" * (-len(data) % 4) + (root / "extra.cpio").read_bytes())
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
