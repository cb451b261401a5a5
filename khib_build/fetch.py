"""Fetch pinned sources into the download dir; nothing unverified is ever kept or used.

Origins are tried in order: the download dir, the configured mirrors, the upstream
URLs, then (on Debian-like hosts) the distribution's source archive through
``apt-get source``, whose ``.orig`` tarballs are the upstream bytes.  Downloads land in
``<dl>/.partial/`` and are renamed to their final name only once the sha256 matches.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import requests

from khib_build.errors import FetchError
from khib_build.recipes import SourceSpec
from khib_build.report import Progress, say

CHUNK = 1 << 20
TIMEOUTS = (10, 30)  # connect, read (seconds)


class AttemptFailed(Exception):
    """One origin did not yield the right bytes; the reason is for the final report."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def fetch(spec: SourceSpec, dl_dir: Path, mirrors: Sequence[str] = (), offline: bool = False,
          apt_state: Path | None = None) -> Path:
    """Return the verified path of ``spec`` in ``dl_dir``, fetching it if needed."""
    final = dl_dir / spec.filename
    tried: list[str] = []
    if final.is_file():
        if sha256_of(final) == spec.sha256:
            return final
        final.unlink()
        tried.append(f"{final}: wrong sha256, removed")
    else:
        tried.append(f"{final}: not there")
    for label, attempt in origins(spec, mirrors, offline, apt_state):
        try:
            attempt(dl_dir)
            say(f"fetch {spec.filename}: verified, from {label}")
            return final
        except AttemptFailed as exc:
            say(f"fetch {spec.filename}: {label}: {exc}")
            tried.append(f"{label}: {exc}")
    hint = " (offline: only the download dir and file:// mirrors were used)" if offline else ""
    raise FetchError(
        f"cannot obtain {spec.filename} (sha256 {spec.sha256}){hint}; tried:\n  "
        + "\n  ".join(tried)
        + f"\nput the file in {dl_dir} or configure a mirror that has it"
    )


Attempt = Callable[[Path], None]


def origins(spec: SourceSpec, mirrors: Sequence[str], offline: bool, apt_state: Path | None
            ) -> Iterator[tuple[str, Attempt]]:
    """(label, attempt) pairs in the order they are tried."""
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + spec.filename
        if offline and not url.startswith("file://"):
            continue
        yield url, lambda dl, url=url: download(url, spec, dl)
    if offline:
        return
    for url in spec.urls:
        yield url, lambda dl, url=url: download(url, spec, dl)
    if spec.debian and apt_state and debian_like():
        label = f"apt-get source {spec.debian.package} ({spec.debian.file})"
        yield label, lambda dl: apt_source(spec, dl, apt_state)


def download(url: str, spec: SourceSpec, dl_dir: Path) -> None:
    """Stream ``url`` into the download dir, verified."""
    store_verified(dl_dir, spec, read_url(url, Progress(f"fetch {spec.filename}", None)))


def store_verified(dl_dir: Path, spec: SourceSpec, blocks: Iterator[bytes]) -> None:
    """Write ``blocks`` under .partial/, then rename into place only if the sha256 matches."""
    partial = dl_dir / ".partial"
    partial.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=spec.filename + ".", dir=partial)
    temporary = Path(name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as handle:
            for block in blocks:
                handle.write(block)
                digest.update(block)
            handle.flush()
            os.fsync(handle.fileno())
        if digest.hexdigest() != spec.sha256:
            raise AttemptFailed(f"wrong sha256 {digest.hexdigest()}, rejected")
        os.replace(temporary, dl_dir / spec.filename)
    finally:
        temporary.unlink(missing_ok=True)


def read_url(url: str, progress: Progress) -> Iterator[bytes]:
    """The bytes at ``url`` (http, https or file), reported as they arrive."""
    parsed = urllib.parse.urlparse(url)
    try:
        if parsed.scheme == "file":
            path = Path(urllib.parse.unquote(parsed.path))
            progress.total = path.stat().st_size
            yield from read_blocks(path, progress)
        else:
            yield from read_http(url, progress)
    except OSError as exc:
        raise AttemptFailed(exc.strerror or str(exc)) from None
    progress.finish()


def read_blocks(path: Path, progress: Progress | None = None) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            if progress:
                progress.advance(len(block))
            yield block


def read_http(url: str, progress: Progress) -> Iterator[bytes]:
    try:
        with requests.get(url, stream=True, timeout=TIMEOUTS) as response:
            if response.status_code != 200:
                raise AttemptFailed(f"HTTP {response.status_code} {response.reason}")
            length = response.headers.get("Content-Length", "")
            progress.total = int(length) if length.isdigit() else None
            for block in response.iter_content(CHUNK):
                progress.advance(len(block))
                yield block
    except requests.RequestException as exc:
        raise AttemptFailed(short_reason(exc)) from None


def short_reason(exc: requests.RequestException) -> str:
    """The innermost cause of a requests failure, without its repr noise."""
    cause: BaseException = exc
    while cause.__context__ is not None:
        cause = cause.__context__
    return f"{type(exc).__name__}: {cause}"


def debian_like() -> bool:
    """True on hosts whose apt can fetch Debian-format source packages."""
    if not shutil.which("apt-get"):
        return False
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return False
    fields = dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line
    )
    ids = (fields.get("ID", "") + " " + fields.get("ID_LIKE", "")).replace('"', "").split()
    return "debian" in ids or "ubuntu" in ids


def apt_source(spec: SourceSpec, dl_dir: Path, state: Path) -> None:
    """Fetch the .orig tarball with ``apt-get source --download-only``, verified.

    The system's apt configuration is left alone: a private sources list holds a
    ``deb-src`` line for each Debian or Ubuntu archive the system already uses (as
    ``apt-get indextargets`` reports them), with its own lists dir under ``state``.
    """
    assert spec.debian is not None
    options = apt_options(state)
    update = run_apt(["apt-get", *options, "update"])
    workdir = Path(tempfile.mkdtemp(prefix="apt-", dir=dl_dir / ".partial"))
    try:
        result = run_apt(["apt-get", *options, "source", "--download-only", spec.debian.package],
                         cwd=workdir)
        found = workdir / spec.debian.file
        if not found.is_file():
            last = (result.stdout + update.stdout).strip().splitlines()[-1:] or ["no output"]
            raise AttemptFailed(f"{spec.debian.file} not obtained ({last[0]})")
        store_verified(dl_dir, spec, read_blocks(found))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def apt_options(state: Path) -> list[str]:
    """``-o`` options pointing apt at a private deb-src list and lists dir."""
    lists = state / "lists"
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    (state / "sources.list.d").mkdir(exist_ok=True)
    sources = state / "sources.list"
    sources.write_text("".join(f"deb-src {line}\n" for line in debian_archives()))
    return [
        "-o", f"Dir::Etc::SourceList={sources}",
        "-o", f"Dir::Etc::SourceParts={state / 'sources.list.d'}",
        "-o", f"Dir::State::Lists={lists}",
        "-o", "Debug::NoLocking=1",
        # As root apt drops to _apt for downloads, which cannot write a user's folders.
        *(["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []),
    ]


def debian_archives() -> list[str]:
    """``URI suite component`` for each Debian or Ubuntu archive apt is configured with."""
    fmt = "$(REPO_URI) $(RELEASE) $(COMPONENT) $(ORIGIN) $(TARGET_OF)"
    result = run_apt(["apt-get", "indextargets", "--format", fmt])
    archives = set()
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[3] in ("Debian", "Ubuntu") and parts[4] == "deb":
            archives.add(" ".join(parts[:3]))
    if not archives:
        raise AttemptFailed("apt is configured with no Debian or Ubuntu archive")
    return sorted(archives)


def run_apt(command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "LC_ALL": "C"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AttemptFailed(str(exc)) from None
