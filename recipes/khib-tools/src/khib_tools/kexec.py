"""The kexec mechanics: confining B to its window, loading it with preserve_context,
jumping to it and back.

B's command line keeps it in the window and the low ranges A can spare
(``memmap=exactmap``), away from A's 1-16 MiB (``crashkernel=15M@1M``: RAM B has but never
allocates from), where it was put (``nokaslr``: physical KASLR ignores exactmap), on one
CPU (A's others stay parked where A left them).
"""

from __future__ import annotations

import os
import subprocess
import tempfile

from khib_tools.newc import archive

LOW_WINDOWS = "memmap=636K@4K memmap=15M@1M"  # BIOS area and where A's kernel sits
RESERVE = "crashkernel=15M@1M"  # keeps B's allocations away from A's 1-16 MiB
STAY = "nokaslr"
ONE_CPU = "maxcpus=1"


class KexecError(Exception):
    """kexec refused: the message says why, in kexec's words and ours."""


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def confinement(start: int, length: int) -> str:
    """B's command line: only the window and the low ranges B may use, placed as asked."""
    return " ".join(["memmap=exactmap", LOW_WINDOWS, f"memmap={length >> 20}M@{start >> 20}M",
                     RESERVE, STAY, ONE_CPU])


def appended(initrd: bytes, files: dict[str, bytes]) -> bytes:
    """An initrd with ``files`` appended as an uncompressed cpio segment (the kernel
    unpacks it after the rest)."""
    return initrd + b"\0" * (-len(initrd) % 4) + archive(files)


def load(kernel: bytes, initrd: bytes, cmdline: str, window: tuple[int, int]) -> None:
    """Load a kernel into the window (``kexec --load-preserve-context``). The files kexec
    reads are private (0600) and zeroed before they are removed: an initrd may carry a key."""
    start, length = window
    with tempfile.TemporaryDirectory(prefix="khib-") as folder:
        paths = []
        try:
            for name, data in (("kernel", kernel), ("initrd", initrd)):
                fd, path = tempfile.mkstemp(prefix=name, dir=folder)
                paths.append((path, len(data)))
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
            loaded = run("kexec", "--load-preserve-context", f"--mem-min={start:#x}",
                         f"--mem-max={start + length - 1:#x}", f"--initrd={paths[1][0]}",
                         f"--append={cmdline}", paths[0][0])
        finally:
            for path, size in paths:
                with open(path, "r+b") as handle:
                    handle.write(bytes(size))
    if loaded.returncode:
        hint = ("; this kernel lacks CONFIG_KEXEC_JUMP" if "Invalid argument" in loaded.stderr
                else "")
        raise KexecError(f"kexec --load-preserve-context failed: {loaded.stderr.strip()}{hint}")


def jump() -> str:
    """Jump to the loaded kernel; returns (kexec's complaint, if any) once this kernel
    runs again. ``-x``: kexec would take every network interface down, and nothing would
    bring them back up."""
    return run("kexec", "-e", "-x").stderr.strip()
