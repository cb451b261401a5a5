"""kexec jump round trips with the image's own tools, on the kernels khib-build built
(x86_64 and i386, each with its own default image): A keeps a token and jumps; B saves A
to a virtio disk, damages the token in A's memory, restores A from the disk and jumps
back; A resumes with its token intact.  Without the restore, A finds it damaged."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import DEFAULT_CONFIG, X86_64_CONFIG, assert_ok, khib

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Target:
    config: Path
    image: Path
    kernel: Path


FIXTURES = {"x86_64": (X86_64_CONFIG, "image_x86_64", "kernel_x86_64"),
            "i386": (DEFAULT_CONFIG, "default_image", "kernel_i386")}


@pytest.fixture(params=list(FIXTURES))
def target(request: pytest.FixtureRequest) -> Target:
    """Each arch's config, default image and built kernel."""
    config, image, kernel = FIXTURES[request.param]
    return Target(config, request.getfixturevalue(image), request.getfixturevalue(kernel))


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


# In B: find every copy of A's token in the saved image and overwrite it in A's memory
# at its physical address, through a shared mapping of /dev/mem (read and write stop
# at the end of B's own RAM; a mapping reaches A's RAM beyond it).
DAMAGE_PY = """import mmap, os, struct, sys
image, token = sys.argv[1], sys.argv[2].encode()
hits = []
with open(image, "rb") as f:
    header = f.read(64)
    phoff, = struct.unpack_from("<Q", header, 32)
    phnum, = struct.unpack_from("<H", header, 56)
    f.seek(phoff)
    loads = [struct.unpack("<IIQQQQQQ", f.read(56)) for _ in range(phnum)]
    for kind, _, offset, _, paddr, filesz, _, _ in loads:
        if kind != 1 or not filesz:
            continue
        done, tail = 0, b""
        f.seek(offset)
        while done < filesz:
            chunk = f.read(min(1 << 20, filesz - done))
            data = tail + chunk
            at = data.find(token)
            while at >= 0:
                hits.append(paddr + done - len(tail) + at)
                at = data.find(token, at + 1)
            done += len(chunk)
            tail = data[-(len(token) - 1):]
mem = os.open("/dev/mem", os.O_RDWR | os.O_SYNC)
for paddr in hits:
    page = paddr & ~4095
    view = mmap.mmap(mem, 8192, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=page)
    view[paddr - page:paddr - page + len(token)] = b"X" * len(token)
    view.close()
print("B damaged", len(hits), "copies at", " ".join(hex(a) for a in hits[:8]))
"""
A_SCRIPT = """#!/bin/sh
token={token}
echo "$token" > /tmp/token
khib jump --kernel /boot/bzImage --initrd /boot/initrd --window 128M:64M --b-run /boot/b.sh
echo "A result=$? token-now=$token file-now=$(cat /tmp/token)"
"""
B_SCRIPT = """#!/bin/sh
echo "B-MARKER $(grep -o 'kexec_jump_back_entry=[^ ]*' /proc/cmdline)"
khib save /dev/vda && khib info /dev/vda | head -n 1
python3 /boot/damage.py /dev/vda {token}
{restore}
khib back
"""


def jump_run(target: Target, tmp_path: Path, restore: bool) -> tuple[str, str, Path]:
    """One round trip in QEMU (256 MiB, B in 128-192 MiB): the console, token and disk."""
    token = f"tok-{secrets.token_hex(12)}"
    data = target.image.read_bytes()
    b_script = B_SCRIPT.format(token=token, restore="khib restore /dev/vda" if restore
                               else "echo B-NO-RESTORE")
    b_initrd = appended(data, {"boot/b.sh": b_script.encode(),
                               "boot/damage.py": DAMAGE_PY.encode()}, tmp_path)
    a_initrd = tmp_path / "a-initrd"
    a_initrd.write_bytes(appended(data, {"boot/bzImage": target.kernel.read_bytes(),
                                         "boot/initrd": b_initrd,
                                         "boot/a.sh": A_SCRIPT.format(token=token).encode()},
                                  tmp_path))
    disk = tmp_path / "disk.img"
    with disk.open("wb") as sparse:
        sparse.truncate(256 << 20)
    result = khib("boot", "-c", target.config, "--kernel", target.kernel, "--image", a_initrd,
                  "--memory", 256, "--disk", disk, "--run", "/boot/a.sh",
                  "--expect", "A result=", "--timeout", 600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr
    return result.stdout, token, disk


def test_jump_save_damage_restore_and_back(target: Target, tmp_path: Path) -> None:
    console, token, disk = jump_run(target, tmp_path, restore=True)
    tail = console[-6000:]
    # In order: A jumps, B runs with the jump-back entry, A resumes (a jump that never
    # happened has no B marker; one that never came back has no "resumed").
    jumping = console.index("khib: jumping to /boot/bzImage")
    b_marker = re.search(r"B-MARKER kexec_jump_back_entry=0x[0-9a-f]+", console)
    assert b_marker, tail
    resumed = console.index("khib: resumed after the jump")
    assert jumping < b_marker.start() < resumed < console.index("A result=0"), tail
    # B saved A to the disk: the host finds A's token there; zero pages were recorded.
    info = re.search(r"/dev/vda: (\d+) segments, (\d+) MiB of memory, (\d+) MiB stored, "
                     r"(\d+) zero pages", console)
    assert info and int(info[4]) > 0, tail
    assert token.encode() in disk.read_bytes()
    # B overwrote every copy of the token in A's memory, then wrote the image back.
    damaged = re.search(r"B damaged (\d+) copies", console)
    assert damaged and int(damaged[1]) > 0, tail
    assert "segments written and verified" in console, tail
    assert f"A result=0 token-now={token} file-now={token}" in console, tail


def test_without_restore_a_finds_its_token_damaged(image_x86_64: Path, kernel_x86_64: Path,
                                                   tmp_path: Path) -> None:
    """The proof that the overwrite reaches A: without khib restore, A sees it."""
    console, token, _ = jump_run(Target(X86_64_CONFIG, image_x86_64, kernel_x86_64), tmp_path,
                                 restore=False)
    assert "B-NO-RESTORE" in console and "B damaged" in console, console[-6000:]
    result = re.search(r"A result=0 token-now=(\S*) file-now=(\S*)", console)
    assert result, console[-6000:]
    assert result[1] != token and result[2] != token
