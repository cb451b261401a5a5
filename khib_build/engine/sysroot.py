"""Sysroots: what a package's compiler sees instead of the host's /usr.

The base is the target's C library: the headers and static libraries of the installed
Debian development packages the toolchain declares, copied once per package version set
into ``<cache>/sysroots/``.  Each package then builds against its own
``<out>/sysroot/<name>/``: the base plus the staging trees of its declared dependencies
(and theirs), hard-linked.  With ``--sysroot`` pointing there, a header or library that
no declared dependency installs is not found, whatever the host has installed.

Package keys hold the base's content, not its versions (:func:`libc_files`): the headers
one by one, so that a key holds only the headers its build read, and the rest (file
names, link targets, libraries and start files) as one digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeGuard

from khib_build.engine.cache import Cache
from khib_build.engine.keys import LibcFiles, sysroot_key
from khib_build.errors import KhibError
from khib_build.fsutil import (
    built_beside,
    exclusive,
    merge,
    reason,
    sha256_of,
    stamp,
    walk,
    write_atomically,
)
from khib_build.settings.config import ImageConfig

KEPT = ("usr/include/",)  # plus the arch's library folders
HEADERS = "usr/include/"


def libc_packages(config: ImageConfig) -> tuple[str, ...]:
    return config.toolchain.libc_packages or config.target.libc_packages


def libc_versions(packages: Sequence[str]) -> dict[str, str]:
    """The installed version of each C library package; an error names what is missing."""
    query = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${db:Status-Status}\n", *packages],
        capture_output=True, text=True, check=False)
    installed = {}
    for line in query.stdout.splitlines():
        name, version, status = line.split("\t")
        if status == "installed":
            installed[name.split(":")[0]] = version
    missing = [p for p in packages if p not in installed]
    if missing:
        raise KhibError(f"the target C library needs the Debian package(s) {' '.join(missing)}"
                        f"; install them (apt-get install {' '.join(missing)})")
    return {p: installed[p] for p in packages}


def base_sysroot(config: ImageConfig, cache: Cache, versions: dict[str, str]) -> Path:
    """The C library's headers and static libraries, assembled once per version set (and
    held in use for the run)."""
    return cache.use(assembled_sysroot(config, cache.sysroots, versions))


def assembled_sysroot(config: ImageConfig, sysroots: Path, versions: dict[str, str]) -> Path:
    kept = (*KEPT, *(f"{d}/" for d in config.target.lib_dirs))
    final = sysroots / sysroot_key(versions, kept)
    if final.is_dir():
        return final
    with exclusive(sysroots / f".{final.name}.lock", lambda: None):  # one assembly at once
        if final.is_dir():
            return final
        try:
            with built_beside(final) as staging:
                for package in versions:
                    listing = subprocess.run(["dpkg-query", "-L", package],
                                             capture_output=True, text=True,
                                             check=True).stdout
                    for name in listing.splitlines():
                        if name.lstrip("/").startswith(kept):
                            copy_in(Path(name), staging)
        except OSError as exc:
            raise KhibError(f"cannot assemble the C library's sysroot in {final.parent}: "
                            f"{reason(exc)}") from None
    return final


def libc_files(base: Path) -> LibcFiles:
    """Digests of a base sysroot's headers, and one digest of the rest.

    A file whose size, times and inode are those the last run saw keeps the digest it had
    then (kept in ``.<base>.files.json`` beside the base, as git's index keeps stat data),
    so a run that changes nothing reads no file of the C library."""
    memo_path = base.with_name(f".{base.name}.files.json")
    memo = read_memo(memo_path)
    seen: dict[str, list[int | str]] = {}
    headers = {}
    rest = hashlib.sha256()
    try:
        for rel, path, st in walk(base):
            if stat.S_ISDIR(st.st_mode):
                continue
            if stat.S_ISLNK(st.st_mode):
                digest = os.readlink(path)
            else:
                now: list[int | str] = [*stamp(st)]
                known = memo.get(rel)
                digest = known[4] if remembered(known, now) else sha256_of(path)
                seen[rel] = [*now, digest]
            if rel.startswith(HEADERS):
                headers[rel] = digest
                digest = "header"
            rest.update(f"{rel}\0{stat.S_IFMT(st.st_mode):o}\0{digest}\0".encode())
    except OSError as exc:
        raise KhibError(f"cannot read the C library's sysroot {base}: {reason(exc)}") from None
    if seen != memo:
        with contextlib.suppress(OSError):  # only a memo: the next run hashes again
            write_atomically(memo_path, json.dumps(seen, sort_keys=True).encode())
    return LibcFiles(headers, rest.hexdigest())


def remembered(known: object, now: list[int | str]) -> TypeGuard[list[Any]]:
    """Whether a memo entry is well formed and holds the file's stat data now."""
    return (isinstance(known, list) and len(known) == 5 and known[:4] == now
            and isinstance(known[4], str))


def read_memo(path: Path) -> dict[str, list[int | str]]:
    """The stat data and digests :func:`libc_files` kept, or nothing if unreadable."""
    try:
        memo = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def copy_in(path: Path, root: Path) -> None:
    """Copy one host file or link into ``root``; absolute links are kept inside it."""
    if path.is_dir() and not path.is_symlink():
        return
    dest = root / path.relative_to("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        target = os.readlink(path)
        if target.startswith("/"):
            target = os.path.relpath(root / target.lstrip("/"), dest.parent)
        os.symlink(target, dest)
    elif path.is_file():
        shutil.copy2(path, dest)


def package_sysroot(name: str, base: Path, trees: Sequence[Path], dest: Path) -> Path:
    """``dest`` made afresh from the base and the dependencies' staging trees."""
    try:
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        for tree in (base, *trees):
            merge(tree, dest)
    except OSError as exc:
        raise KhibError(f"package {name}: cannot assemble its sysroot {dest}: "
                        f"{reason(exc)}") from None
    return dest
