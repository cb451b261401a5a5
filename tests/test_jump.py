"""A kexec jump round trip with the image's own tools, on the kernel khib-build built."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import X86_64_CONFIG, assert_ok, khib

pytestmark = pytest.mark.slow

A_SCRIPT = """#!/bin/sh
token=tok-$(cat /proc/sys/kernel/random/uuid)
echo "$token" > /tmp/token
echo "A token=$token"
khib jump --kernel /boot/bzImage --initrd /boot/initrd --b-run /boot/b.sh
echo "A result=$? token-now=$token file-now=$(cat /tmp/token)"
"""
B_SCRIPT = """#!/bin/sh
echo "B-MARKER $(grep -o 'kexec_jump_back_entry=[^ ]*' /proc/cmdline)"
khib back
"""


def appended(image: bytes, files: dict[str, bytes], root: Path) -> bytes:
    """``image`` with an uncompressed segment holding ``files`` (scripts executable)."""
    tree = root / f"segment-{len(list(root.iterdir()))}"
    for name, data in files.items():
        path = tree / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o755 if name.endswith(".sh") else 0o644)
    assert_ok(khib("pack", tree, "-o", tree.with_suffix(".cpio"), "--compress", "none"))
    return image + b"\0" * (-len(image) % 4) + tree.with_suffix(".cpio").read_bytes()


def test_jump_to_b_and_back_keeps_a_intact(image_x86_64: Path, kernel_x86_64: Path,
                                           tmp_path: Path) -> None:
    image = image_x86_64.read_bytes()
    b_initrd = appended(image, {"boot/b.sh": B_SCRIPT.encode()}, tmp_path)
    a_initrd = tmp_path / "a-initrd"
    a_initrd.write_bytes(appended(image, {"boot/bzImage": kernel_x86_64.read_bytes(),
                                          "boot/initrd": b_initrd,
                                          "boot/a.sh": A_SCRIPT.encode()}, tmp_path))
    result = khib("boot", "-c", X86_64_CONFIG, "--kernel", kernel_x86_64, "--image", a_initrd,
                  "--run", "/boot/a.sh", "--expect", "A result=", "--timeout", 300)
    console = result.stdout
    assert result.returncode == 0, console[-4000:] + result.stderr
    token = re.search(r"A token=(tok-\S+)", console)
    assert token, console[-4000:]
    # In order: A jumps, B runs with the jump-back entry, A resumes.
    jumping = console.index("khib: jumping to /boot/bzImage")
    b_marker = re.search(r"B-MARKER kexec_jump_back_entry=0x[0-9a-f]+", console)
    assert b_marker, console[-4000:]
    resumed = console.index("khib: resumed after the jump")
    assert jumping < b_marker.start() < resumed < console.index("A result=0")
    assert f"A result=0 token-now={token[1]} file-now={token[1]}" in console


def test_boot_attaches_a_raw_virtio_disk(image_x86_64: Path, kernel_x86_64: Path,
                                         tmp_path: Path) -> None:
    """Where B will write A's image: a raw disk the test attaches, /dev/vda in the guest."""
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"KHIB-DISK-MARKER".ljust(1 << 20, b"\0"))
    result = khib("boot", "-c", X86_64_CONFIG, "--kernel", kernel_x86_64, "--image",
                  image_x86_64, "--disk", disk, "--run", "head -c 16 /dev/vda; echo",
                  "--expect", "khib: run exited", "--timeout", 180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "KHIB-DISK-MARKER" in result.stdout.split("khib.run=")[-1]
