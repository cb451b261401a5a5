"""makedumpfile as sid ships it, to read the cores `khib export` writes: the newest
makedumpfile needs a newer C library than this host's, so it runs in a Debian sid root
made once with mmdebstrap from the archive apt is configured with (cached in the user's
cache), for the architecture of the core it reads."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
from pathlib import Path

from khib_build.sources.fetch import archives
from tests.chroot import in_root
from tests.helpers import USER_CACHE

SUITE = "sid"
DEBIAN_ARCH = {"x86_64": "amd64", "i386": "i386"}


def sid_root(arch: str) -> Path:
    """A sid root with makedumpfile for ``arch``'s cores, made once (about 30 s)."""
    root = USER_CACHE / "test-chroots" / f"makedumpfile-{SUITE}-{DEBIAN_ARCH[arch]}"
    root.parent.mkdir(parents=True, exist_ok=True)
    with (root.parent / f".{root.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "usr" / "sbin" / "makedumpfile").is_file():
            shutil.rmtree(root, ignore_errors=True)
            uri = archives(SUITE)[0].split()[0]
            # The snapshot's sid Release has expired: apt must not refuse it for that.
            subprocess.run(["mmdebstrap", "--quiet", "--variant=apt", "--mode=root",
                            f"--architectures={DEBIAN_ARCH[arch]}",
                            "--aptopt=Acquire::Check-Valid-Until \"false\"",
                            "--include=makedumpfile", SUITE, str(root), uri],
                           check=True, capture_output=True, timeout=900)
    return root


def makedumpfile_version(root: Path) -> str:
    said = subprocess.run(["chroot", str(root), "makedumpfile", "-v"], capture_output=True,
                          text=True, check=False)
    found = re.search(r"version (\S+)", said.stdout + said.stderr)
    return found[1] if found else "?"


def free_pages(core: Path, arch: str) -> tuple[int | None, str]:
    """The free pages makedumpfile -d 16 excludes from ``core`` (None if it cannot read
    it), and what it said of the kernel (or its last words when it found no count)."""
    root = sid_root(arch)
    name = f"khib-core-{os.getpid()}"  # runs side by side each have their own files
    inside = root / "tmp" / f"{name}.elf"
    inside.unlink(missing_ok=True)
    try:
        inside.hardlink_to(core)
    except OSError:  # another file system
        shutil.copyfile(core, inside)
    try:
        # makedumpfile sizes its buffers by /proc/meminfo: a /proc of its own (without
        # one it worked in 0-byte cycles and never ended).
        said = in_root(root, "makedumpfile", "-d", "16", "--message-level", "31", "-f",
                       f"/tmp/{name}.elf", f"/tmp/{name}.dump", check=False)
    finally:
        inside.unlink(missing_ok=True)
        (root / "tmp" / f"{name}.dump").unlink(missing_ok=True)
    text = (said.stdout + said.stderr).replace("\r", "\n")
    found = re.search(r"Free pages\s*:\s*(0x[0-9a-fA-F]+|\d+)", text)
    remark = "it does not know this release (\"The kernel version is not supported.\")" \
        if "The kernel version is not supported." in text else ""
    if found is None:
        remark = text.strip().splitlines()[-1] if text.strip() else "no output"
    return (int(found[1], 0) if found else None), remark
