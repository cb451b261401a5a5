"""A real Debian system as A: Debian 12 with systemd, udev and python3 on ext4, on a GPT
disk whose second partition (label "khib") takes the image; A's kernel installed with its
modules folder, the khib package installed with dpkg (and purged and installed again,
recorded), Debian's own initramfs made for the kernel inside the root. Made with
mmdebstrap from the Debian archive apt is configured with; cached in the user's cache by
its inputs (the kernel, the package, this file); about a minute to make.

`python -m tests.system KERNEL DEB OUTDIR` (`make demo-system`) makes one into OUTDIR and
prints how to boot it. The root also holds the scenario tests/test_system.py runs: a
service, started by systemd when the kernel's command line asks
(``systemd.wants=khib-scenario.service``), that hibernates the system and checks it
after the resume, or (``khib.scenario=report``) says how the boot went.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

from khib_build.sources.fetch import archives
from tests.chroot import in_root
from tests.helpers import USER_CACHE

SUITE = "bookworm"
PACKAGES = ("systemd-sysv", "udev", "e2fsprogs", "python3", "initramfs-tools", "busybox",
            "kmod", "zstd", "util-linux")
MiB = 1 << 20
ROOT_SIZE = 1536 * MiB
KHIB_SIZE = 1280 * MiB  # the image of a 1 GiB A and B's boot area
DISK_SIZE = MiB + ROOT_SIZE + KHIB_SIZE + MiB  # and the GPT's two copies
LINUX_DATA = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
LINUX_RESERVED = "8DA63339-0007-60C0-C436-083AC8230908"  # nothing mounts or swaps it
ROOT_APPEND = "root=PARTLABEL=root ro"
SCENARIO = Path(__file__).with_name("system_scenario.sh")
HOLDER = Path(__file__).with_name("system_holder.py")
UNIT = """[Unit]
Description=khib's hibernation scenario (tests/test_system.py)
After=multi-user.target

[Service]
Type=simple
ExecStart=/usr/local/sbin/khib-scenario
StandardOutput=journal+console
StandardError=journal+console
"""


class System(NamedTuple):
    disk: Path  # the GPT disk: 1 the root (ext4), 2 khib's
    kernel: Path
    initrd: Path  # Debian's, made by mkinitramfs in the root, with khib's hook
    release: str
    record: dict[str, object]  # what dpkg did, and what the build measured


def kernel_release(bzimage: bytes) -> str:
    """The release a bzImage names in its setup header (kernel_version)."""
    at, = struct.unpack_from("<H", bzimage, 0x20E)
    return bzimage[at + 0x200:at + 0x300].split(b" ")[0].decode()


def files_of(root: Path) -> set[str]:
    """Every path of the root but dpkg's own records, logs and caches."""
    skipped = ("var/lib/dpkg/", "var/log/", "var/cache/", "tmp/", "var/lib/initramfs-tools/")
    found = set()
    for path in root.rglob("*"):
        name = str(path.relative_to(root))
        if not name.startswith(skipped) and not name.startswith(("proc/", "sys/", "dev/")):
            found.add(name)
    return found


def debootstrapped(root: Path, cache: Path) -> None:
    """Debian's minbase and PACKAGES, from a tarball mmdebstrap made once (cached)."""
    name = hashlib.sha256(repr((SUITE, PACKAGES)).encode()).hexdigest()[:16]
    tarball = cache / f"base-{name}.tar"
    if not tarball.is_file():
        partial = cache / f"base-{name}.partial.tar"  # mmdebstrap writes a tar for .tar
        uri = archives(SUITE)[0].split()[0]
        subprocess.run(["mmdebstrap", "--quiet", "--mode=root", "--variant=minbase",
                        f"--include={','.join(PACKAGES)}", SUITE, str(partial), uri],
                       check=True, capture_output=True, timeout=1800)
        os.replace(partial, tarball)
    root.mkdir()
    subprocess.run(["tar", "--numeric-owner", "-xpf", str(tarball), "-C", str(root)],
                   check=True, capture_output=True)


def install_kernel(root: Path, kernel: Path, release: str) -> None:
    """A's kernel as a Debian kernel package lays it out, with its config (which
    mkinitramfs reads) from beside it, as `khib-build kernel` writes it: all it needs is
    built in, so its modules folder holds no module, just what depmod reads."""
    shutil.copyfile(kernel, root / "boot" / f"vmlinuz-{release}")
    shutil.copyfile(kernel.with_name("kernel.full.config"), root / "boot" / f"config-{release}")
    modules = root / "lib" / "modules" / release
    modules.mkdir(parents=True)
    for name in ("modules.order", "modules.builtin"):
        (modules / name).touch()
    in_root(root, "depmod", release)


def configure(root: Path) -> None:
    (root / "etc" / "fstab").write_text("PARTLABEL=root / ext4 errors=remount-ro 0 1\n")
    (root / "etc" / "hostname").write_text("khib-demo\n")
    in_root(root, "passwd", "--delete", "root")  # a demo: root logs in on the console
    sbin = root / "usr" / "local" / "sbin" / "khib-scenario"
    shutil.copyfile(SCENARIO, sbin)
    sbin.chmod(0o755)
    lib = root / "usr" / "local" / "lib" / "khib-scenario"
    lib.mkdir(parents=True)
    shutil.copyfile(HOLDER, lib / "holder.py")
    (root / "etc" / "systemd" / "system" / "khib-scenario.service").write_text(UNIT)
    hook = root / "usr" / "lib" / "systemd" / "system-sleep" / "khib-scenario"
    hook.parent.mkdir(parents=True, exist_ok=True)
    hook.write_text('#!/bin/sh\necho "khib-scenario sleep hook: $1 $2"\n')
    hook.chmod(0o755)


def install_package(root: Path, deb: Path) -> dict[str, object]:
    """dpkg -i, --purge and -i again; what each left, for the tests."""
    shutil.copyfile(deb, root / "tmp" / "khib.deb")
    before = files_of(root)
    first = in_root(root, "dpkg", "-i", "/tmp/khib.deb")
    installed = files_of(root) - before
    key = root / "etc" / "khib" / "hibernate.key"
    keyed = {"size": key.stat().st_size, "mode": oct(key.stat().st_mode & 0o7777)} \
        if key.is_file() else None
    purged = in_root(root, "dpkg", "--purge", "khib")
    left = sorted(files_of(root) - before)
    gone = sorted(before - files_of(root))
    again = in_root(root, "dpkg", "-i", "/tmp/khib.deb")
    (root / "tmp" / "khib.deb").unlink()
    return {"installed": sorted(installed), "key": keyed, "left_after_purge": left,
            "gone_after_purge": gone,
            "said": [first.stdout + first.stderr, purged.stdout + purged.stderr,
                     again.stdout + again.stderr]}


def make_initramfs(root: Path, release: str) -> str:
    made = in_root(root, "update-initramfs", "-c", "-k", release)
    listed = in_root(root, "lsinitramfs", f"/boot/initrd.img-{release}")
    return made.stdout + made.stderr + listed.stdout


def make_disk(disk: Path, root: Path) -> None:
    """The GPT disk, sparse: the root's ext4 made straight into partition 1."""
    with disk.open("wb") as handle:
        handle.truncate(DISK_SIZE)
    table = (f"label: gpt\nunit: sectors\n"
             f"start=2048, size={ROOT_SIZE // 512}, type={LINUX_DATA}, name=root\n"
             f"size={KHIB_SIZE // 512}, type={LINUX_RESERVED}, name=khib\n")
    subprocess.run(["sfdisk", "--quiet", str(disk)], input=table, text=True, check=True,
                   capture_output=True)
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-L", "root", "-d", str(root),
                    "-E", f"offset={MiB}", str(disk), f"{ROOT_SIZE // 1024}k"],
                   check=True, capture_output=True)


def build(folder: Path, kernel: Path, deb: Path) -> None:
    """Make the system into ``folder`` (the base tarball kept in its parent)."""
    started = time.monotonic()
    root = folder / "root"
    debootstrapped(root, folder.parent)
    made = time.monotonic() - started
    release = kernel_release(kernel.read_bytes())
    install_kernel(root, kernel, release)
    configure(root)
    record = install_package(root, deb)
    record["initramfs"] = make_initramfs(root, release)
    shutil.copyfile(root / "boot" / f"initrd.img-{release}", folder / "initrd.img")
    shutil.copyfile(kernel, folder / "vmlinuz")
    make_disk(folder / "disk.img", root)
    shutil.rmtree(root)
    record.update(release=release, mmdebstrap_seconds=round(made, 1),
                  seconds=round(time.monotonic() - started, 1))
    (folder / "record.json").write_text(json.dumps(record, indent=1) + "\n")


def system(kernel: Path, deb: Path) -> System:
    """The system for this kernel and package: from the user's cache, or made there."""
    key = hashlib.sha256()
    for part in (kernel, kernel.with_name("kernel.full.config"), deb, Path(__file__),
                 SCENARIO, HOLDER):
        key.update(hashlib.sha256(part.read_bytes()).digest())
    key.update(repr((SUITE, PACKAGES, DISK_SIZE, ROOT_SIZE)).encode())
    cache = USER_CACHE / "test-systems"
    cache.mkdir(parents=True, exist_ok=True)
    folder = cache / key.hexdigest()[:16]
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "record.json").is_file():
            for old in cache.iterdir():  # one system at a time: each is a disk's worth
                if old.is_dir() and old.name != folder.name:
                    shutil.rmtree(old)
            work = cache / f"{folder.name}.tmp"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            build(work, kernel, deb)
            os.replace(work, folder)
    record = json.loads((folder / "record.json").read_text())
    return System(folder / "disk.img", folder / "vmlinuz", folder / "initrd.img",
                  str(record["release"]), record)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m tests.system KERNEL DEB OUTDIR", file=sys.stderr)
        return 2
    kernel, deb, outdir = (Path(a) for a in argv)
    made = system(kernel, deb)
    outdir.mkdir(parents=True, exist_ok=True)
    for path in (made.disk, made.kernel, made.initrd):
        subprocess.run(["cp", "--sparse=always", str(path), str(outdir / path.name)],
                       check=True)
    print(f"A Debian {SUITE} system with khib, Linux {made.release}, in {outdir}:\n"
          f"  qemu-system-x86_64 -m 1024 -smp 2 -nographic -kernel {outdir}/vmlinuz "
          f"-initrd {outdir}/initrd.img -append 'console=ttyS0 {ROOT_APPEND}' "
          f"-drive file={outdir}/disk.img,format=raw,if=virtio\n"
          "then log in as root (no password) and run `systemctl hibernate`; run the same "
          "command again to resume.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
