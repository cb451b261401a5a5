"""The output dir: where each thing in it lives, what it remembers between runs, and
the lock that keeps runs apart.

``<out>/.khib/`` holds ``lock`` (one run at a time per output dir), one record per
package (``packages/<name>.json``: the inputs and key of the tree now in
``staging/<name>``, and that tree's digest) and ``image.json`` (the inputs of the image
now in the output dir).  A record is removed before what it describes is touched and
written, atomically, only once that is complete, so a run killed at any point leaves
no record that a later run could wrongly trust.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from khib_build.errors import KhibError
from khib_build.fsutil import write_atomically
from khib_build.report import say

# The output dirs this process holds (by resolved path), with their locks: a verb that
# builds both the image and the kernel (deb) takes its output dir once, not twice.
HELD: dict[Path, int] = {}


class OutputDir:
    """One output dir; every path in it is decided here."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.meta = root / ".khib"
        self.lock_fd: int | None = None

    def build_dir(self, package: str) -> Path:
        return self.root / "build" / package

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def log(self, package: str) -> Path:
        return self.logs / f"{package}.log"

    def staging(self, package: str) -> Path:
        return self.root / "staging" / package

    def sysroot(self, package: str) -> Path:
        return self.root / "sysroot" / package

    def file(self, name: str) -> Path:
        """A file at the top: the image (under the config's ``output`` name), bzImage,
        kernel.full.config, kernel.json."""
        return self.root / name

    @property
    def rootfs(self) -> Path:
        return self.root / "rootfs"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def python_modules(self) -> Path:
        return self.root / "python-modules.txt"

    @property
    def kernel_fragment(self) -> Path:
        return self.root / "kernel.config"

    @property
    def kernel_work(self) -> Path:
        return self.root / "kernel-build"

    def kconfig_work(self, arch: str) -> Path:
        return self.root / f"kconfig-{arch}"

    @property
    def legal_info(self) -> Path:
        return self.root / "legal-info"

    @property
    def size_chart(self) -> Path:
        return self.root / "size-report.svg"

    def lock(self, wait: bool = True) -> None:
        """Take the output dir for this run; wait for another run holding it, or fail."""
        held = HELD.get(self.root.resolve())
        if held is not None:
            self.lock_fd = held
            return
        try:
            self.meta.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.meta / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise KhibError(f"cannot use {self.root} as the output dir: "
                            f"{exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            if not wait:
                os.close(fd)
                raise KhibError(f"output dir {self.root} is in use by another khib-build run "
                                f"(pid {holder}); run again later, or without --no-wait to "
                                "wait for it") from None
            say(f"output dir {self.root} is in use by another khib-build run (pid {holder}); "
                "waiting for it to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.lock_fd = HELD[self.root.resolve()] = fd

    def record_path(self, name: str) -> Path:
        return self.meta / "packages" / f"{name}.json"

    def record(self, name: str) -> dict[str, Any] | None:
        return read_json(self.record_path(name))

    def forget(self, name: str) -> None:
        self.record_path(name).unlink(missing_ok=True)

    def remember(self, name: str, record: dict[str, Any]) -> None:
        write_json(self.record_path(name), record)

    def image_record(self) -> dict[str, Any] | None:
        return read_json(self.meta / "image.json")

    def forget_image(self) -> None:
        (self.meta / "image.json").unlink(missing_ok=True)

    def remember_image(self, record: dict[str, Any]) -> None:
        write_json(self.meta / "image.json", record)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_json(path: Path, value: dict[str, Any]) -> None:
    write_atomically(path, (json.dumps(value, indent=1, sort_keys=True) + "\n").encode())
