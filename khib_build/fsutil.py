"""Beneath every stage: atomic outputs (a file or a folder appears under its final name
complete, or not at all), file and tree digests, tree walks, copies and merges."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from khib_build import cancel
from khib_build.errors import ConfigError, KhibError, PackError

CHUNK = 1 << 20  # bytes read at a time


@contextlib.contextmanager
def atomic_output(path: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Write to a temporary file beside ``path``; rename it into place only on success.
    A folder or file that cannot be made is an error naming ``path``."""
    # The name is chosen before the file exists, so that an interrupt arriving just after
    # it is created still finds it to remove (mkstemp leaves a window where it cannot).
    temporary = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise KhibError(f"cannot write {path}: {exc.strerror or exc}") from None
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_atomically(path: Path, data: bytes) -> None:
    with atomic_output(path) as handle:
        handle.write(data)


@contextlib.contextmanager
def built_beside(final: Path, landed: Callable[[Path], bool] = Path.is_dir) -> Iterator[Path]:
    """A new ``.tmp-*`` folder beside ``final`` to fill. When the block ends without an
    error it is renamed to ``final``; if that fails because another run's twin landed
    there first (``landed(final)``), the twin stays. Removed in every other case."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
    try:
        yield staging
        try:
            staging.rename(final)
        except OSError:
            if not landed(final):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_text(path: Path) -> str:
    """A text input (config, recipe, template, table, file list) as UTF-8: a missing file
    or a byte that is not UTF-8 is a ConfigError naming the file (and line and column)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(path, None, "file not found") from None
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read: {reason(exc)}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - data.rfind(b"\n", 0, exc.start)
        raise ConfigError(path, line, f"byte 0x{data[exc.start]:02x} is not UTF-8 (text "
                          "inputs are read as UTF-8)", column) from None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def stamp(st: os.stat_result) -> list[int]:
    """A file's size, times and inode: while they stay, so do its bytes (as git's index
    trusts them; a write changes the ctime, which no one can set back)."""
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def walk(tree: Path) -> Iterator[tuple[str, Path, os.stat_result]]:
    """Every path below ``tree`` in a fixed order, with its relative name and lstat."""
    for folder, dirs, files in os.walk(tree):
        dirs.sort()
        for name in sorted(dirs + files):
            path = Path(folder) / name
            yield path.relative_to(tree).as_posix(), path, path.lstat()


def tree_digest(tree: Path) -> str:
    """A hash of everything a tree holds: names, types, permission bits, data, targets."""
    return copy_tree(tree, None)


def copy_tree(tree: Path, dest: Path | None) -> str:
    """Copy ``tree`` to ``dest`` (if given) and return its digest, reading each file once."""
    digest = hashlib.sha256()
    modes: list[tuple[Path, int]] = []
    if dest is not None:
        dest.mkdir(parents=True, exist_ok=True)
    for rel, path, st in walk(tree):
        cancel.check()
        digest.update(f"{rel}\0{st.st_mode:o}\0".encode())
        target = None if dest is None else dest / rel
        if stat.S_ISLNK(st.st_mode):
            link = os.readlink(path)
            digest.update(link.encode())
            if target is not None:
                os.symlink(link, target)
        elif stat.S_ISDIR(st.st_mode):
            if target is not None:
                target.mkdir()
        elif stat.S_ISREG(st.st_mode):
            with path.open("rb") as source, contextlib.ExitStack() as stack:
                out = None if target is None else stack.enter_context(target.open("wb"))
                while block := source.read(CHUNK):
                    digest.update(block)
                    if out is not None:
                        out.write(block)
            if target is not None:
                os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
        if target is not None and not stat.S_ISLNK(st.st_mode):
            modes.append((target, stat.S_IMODE(st.st_mode)))
        digest.update(b"\0")
    for target, mode in reversed(modes):  # folders last, so read-only ones can be filled
        os.chmod(target, mode)
    return digest.hexdigest()


def reason(exc: OSError) -> str:
    """What went wrong, in one line."""
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


def make_dirs(path: Path, mode: int = 0o755) -> None:
    """``path`` and its missing parents, made with ``mode`` whatever the umask (a folder
    that enters the image must not depend on who built it)."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        folder.mkdir(exist_ok=True)
        os.chmod(folder, mode)


def inside(root: Path, rel: str) -> Path:
    """``root/rel``, refused if any folder on the way is a symlink (which could lead out)."""
    current = root
    for part in rel.split("/")[:-1]:
        current = current / part
        if current.is_symlink() or (current.exists() and not current.is_dir()):
            raise PackError(f"/{rel}: /{current.relative_to(root)} is not a directory; "
                            "refusing to write through it")
    return root / rel


def merge(tree: Path, root: Path, private: bool = False) -> list[str]:
    """Lay ``tree`` over ``root``: files are hard-linked (copied across devices), links
    kept.  ``private`` copies every file instead (files hard-linked together in the tree
    stay so among the copies), so that ``root`` can be changed in place."""
    placed: list[str] = []
    copies: dict[tuple[int, int], Path] = {}
    for rel, source, st in walk(tree):
        cancel.check()
        dest = inside(root, rel)
        if stat.S_ISDIR(st.st_mode):
            if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
                raise PackError(f"{tree.name}: /{rel} is a folder here but not in the image")
            dest.mkdir(exist_ok=True)
            os.chmod(dest, stat.S_IMODE(st.st_mode))
        else:
            if dest.is_dir() and not dest.is_symlink():
                raise PackError(f"{tree.name}: /{rel} would replace a folder of the image")
            dest.unlink(missing_ok=True)
            first = copies.get((st.st_dev, st.st_ino))
            if not private or not stat.S_ISREG(st.st_mode):
                place(source, dest)
            elif first is not None:
                os.link(first, dest)
            else:
                shutil.copy2(source, dest)
                copies[(st.st_dev, st.st_ino)] = dest
        placed.append(rel)
    return placed


def place(source: Path, dest: Path) -> None:
    """Link (or copy) one file; files hard-linked in the tree stay hard-linked."""
    if source.is_symlink():
        os.symlink(os.readlink(source), dest)
        return
    try:
        os.link(source, dest, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        shutil.copy2(source, dest)


@contextlib.contextmanager
def exclusive(lock_file: Path, on_wait: Callable[[], None]) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` (made if missing) against other processes
    and threads; while another holder has it, call ``on_wait`` once and wait, stopping
    if the run is cancelled."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    on_wait()
                    waited = True
                if cancel.STOP.wait(0.2):
                    cancel.check()
        yield
    finally:
        os.close(fd)

