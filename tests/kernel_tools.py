"""The kernel's own initramfs tools (usr/gen_init_cpio, usr/gen_initramfs.sh), built from
Debian's linux-source-6.1 and kept in the user's cache, as the reference packer."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from khib_build import paths

KERNEL_TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
MEMBERS = ("usr/gen_init_cpio.c", "usr/gen_initramfs.sh")


def kernel_usr_tools() -> Path:
    """A folder with ``usr/gen_init_cpio`` (compiled) and ``usr/gen_initramfs.sh``."""
    home = paths.user_cache_root() / "kernel-tools" / "linux-source-6.1"
    if (home / "usr" / "gen_init_cpio").is_file():
        return home
    work = Path(tempfile.mkdtemp(prefix="kernel-tools-"))
    try:
        subprocess.run(["tar", "-xJf", str(KERNEL_TARBALL), "-C", str(work),
                        "--strip-components=1", *(f"linux-source-6.1/{m}" for m in MEMBERS)],
                       check=True)
        subprocess.run(["gcc", "-O2", "-o", str(work / "usr" / "gen_init_cpio"),
                        str(work / "usr" / "gen_init_cpio.c")], check=True)
        home.parent.mkdir(parents=True, exist_ok=True)
        os.replace(work, home)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return home
