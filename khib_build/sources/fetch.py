"""Fetch pinned sources into the download dir; nothing unverified is ever kept or used.

Origins are tried in order: the download dir, the configured mirrors, the upstream
URLs, then (on Debian-like hosts) the distribution's source archive through
``apt-get source``, whose ``.orig`` tarballs are the upstream bytes.  Downloads land in
``<dl>/.partial/`` and are renamed to their final name only once the sha256 matches.

Each HTTP attempt has connect and read timeouts and a total deadline (which also stops
a server that trickles a few bytes a second); a transient failure (a 5xx answer, a
reset or cut connection, a timeout) is retried at the same origin a bounded number of
times with growing pauses, resuming the partial file with a Range request when the
server allows it; then the next origin is tried.  The final error lists every origin
and why it failed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from khib_build import cancel
from khib_build.errors import FetchError
from khib_build.fsutil import CHUNK, sha256_of
from khib_build.report import Progress, say
from khib_build.settings.pins import Deb, SourceSpec

if TYPE_CHECKING:
    import requests

Pinned = SourceSpec | Deb  # a file known by its name and sha256 before it is fetched

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0
BACKOFF = 0.5  # seconds before the first retry; doubled each time


class AttemptFailed(Exception):
    """One origin did not yield the right bytes; the reason is for the final report."""

    def __init__(self, reason: str, transient: bool = False) -> None:
        super().__init__(reason)
        self.transient = transient  # worth trying the same origin again


@dataclass(frozen=True)
class Sources:
    """Where and how sources are fetched."""

    dl_dir: Path
    mirrors: tuple[str, ...]
    offline: bool
    apt_state: Path | None  # private apt lists for `apt-get source`
    deadline: float  # seconds one HTTP attempt may take in all
    retries: int  # further attempts at one origin after a transient failure

    @property
    def partial_dir(self) -> Path:
        return self.dl_dir / ".partial"


def fetch(spec: Pinned, sources: Sources, package: str) -> Path:
    """Return the verified path of ``spec`` (``package``'s source) in the download dir,
    fetching it if needed. A failure's first line names the package, the file and the
    last fault; the lines below it give every origin tried."""
    final = sources.dl_dir / spec.filename
    tried: list[str] = []
    if final.is_file():
        if sha256_of(final) == spec.sha256:
            return final
        final.unlink()
        tried.append(f"{final}: wrong sha256, removed")
    else:
        tried.append(f"{final}: not there")
    for label, attempt in origins(spec, sources):
        say(f"fetch {spec.filename}: trying {label}")
        try:
            with_retries(attempt, sources.retries, f"fetch {spec.filename}: {label}")
            say(f"fetch {spec.filename}: verified, from {label}")
            return final
        except AttemptFailed as exc:
            say(f"fetch {spec.filename}: {label}: {exc}")
            tried.append(f"{label}: {exc}")
    hint = " (offline: only the download dir and file:// mirrors were used)" \
        if sources.offline else ""
    raise FetchError(
        f"package {package}: cannot obtain {spec.filename}: {tried[-1]}\n"
        f"sha256 {spec.sha256}{hint}; tried:\n  " + "\n  ".join(tried)
        + f"\nput the file in {sources.dl_dir} or configure a mirror that has it"
    )


def with_retries(attempt: Callable[[], None], retries: int, label: str) -> None:
    """Run ``attempt``; after a transient failure, pause and try again, ``retries`` times."""
    for number in range(retries + 1):
        try:
            attempt()
            return
        except AttemptFailed as exc:
            if not exc.transient or number == retries:
                raise
            pause = BACKOFF * 2**number
            say(f"{label}: {exc}; trying again in {pause:.1f} s")
            if cancel.STOP.wait(pause):
                cancel.check()


def origins(spec: Pinned, sources: Sources) -> Iterator[tuple[str, Callable[[], None]]]:
    """(label, attempt) pairs in the order they are tried."""
    for mirror in sources.mirrors:
        url = mirror.rstrip("/") + "/" + spec.filename
        if sources.offline and not url.startswith("file://"):
            continue
        yield url, lambda url=url: download(url, spec, sources)
    if sources.offline:
        return
    if isinstance(spec, Deb):
        if sources.apt_state and debian_like():
            label = f"apt-get download {spec.name}:{spec.debian_arch}={spec.version}" + (
                f" from {spec.suite}" if spec.suite else "")
            yield label, lambda: apt_download(spec, sources)
        return
    for url in spec.urls:
        yield url, lambda url=url: download(url, spec, sources)
    if spec.debian and sources.apt_state and debian_like():
        label = f"apt-get source {spec.debian.package} ({spec.debian.file})"
        yield label, lambda: apt_source(spec, sources)


def download(url: str, spec: Pinned, sources: Sources) -> None:
    """Fetch ``url`` into ``.partial/<file>`` (resuming what is there), verify, rename.

    A partial file stays for the next attempt or run only after a transient failure;
    bytes of the wrong hash are deleted.  If a resumed download does not match, it is
    fetched once more from its start, so stale partial bytes never cost a good origin.
    """
    sources.partial_dir.mkdir(parents=True, exist_ok=True)
    partial = sources.partial_dir / spec.filename
    with locked(sources.partial_dir):
        final = sources.dl_dir / spec.filename
        if final.is_file() and sha256_of(final) == spec.sha256:
            return  # another run fetched it while this one waited for the lock
        resumed = partial.exists() and partial.stat().st_size > 0
        fill(url, partial, sources.deadline, spec.filename)
        if verified(partial, spec, sources.dl_dir):
            return
        if resumed:  # verified() removed the bytes: fetch the whole file once more
            fill(url, partial, sources.deadline, spec.filename)
            if verified(partial, spec, sources.dl_dir):
                return
        raise AttemptFailed("wrong sha256, rejected")


def verified(partial: Path, spec: Pinned, dl_dir: Path) -> bool:
    """Rename ``partial`` to its final name if its sha256 matches; else delete it."""
    with partial.open("rb+") as handle:
        os.fsync(handle.fileno())
    if sha256_of(partial) == spec.sha256:
        os.replace(partial, dl_dir / spec.filename)
        return True
    partial.unlink()
    return False


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on a folder (the partial downloads, apt's private state), held
    against other runs and other threads of this one."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def fill(url: str, partial: Path, deadline: float, label: str) -> None:
    """Fill ``partial`` with what ``url`` holds, continuing after the bytes it already has
    where the origin allows (HTTP ranges); a file:// origin is copied whole."""
    progress = Progress(f"fetch {label}", None)
    parsed = urllib.parse.urlparse(url)
    try:
        if parsed.scheme == "file":
            source = Path(urllib.parse.unquote(parsed.path))
            progress.total = source.stat().st_size
            with partial.open("wb") as out:
                for block in read_blocks(source, progress):
                    out.write(block)
        else:
            fill_http(url, partial, deadline, progress)
    except OSError as exc:
        raise AttemptFailed(exc.strerror or str(exc)) from None
    progress.finish()


def fill_http(url: str, partial: Path, deadline: float, progress: Progress) -> None:
    import requests  # here, not at the top: a build with everything cached starts faster
    import urllib3

    have = partial.stat().st_size if partial.exists() else 0
    headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={have}-"} if have else {})}
    started = time.monotonic()
    try:
        response = cancel.wait_for(lambda: requests.get(
            url, stream=True, headers=headers,
            timeout=(CONNECT_TIMEOUT, min(READ_TIMEOUT, deadline))))
        with response, cancel.ended_by_stop(lambda: end_read(response)):
            fill_from(response, partial, have, deadline, started, progress)
    except requests.TooManyRedirects as exc:
        raise AttemptFailed(short_reason(exc)) from None
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        cancel.check()  # (a read ended by stop() is the interrupt, not a fault)
        raise AttemptFailed(short_reason(exc), transient=True) from None


def end_read(response: requests.Response) -> None:
    """End a read blocked on ``response``'s socket, from another thread."""
    connection = getattr(response.raw, "connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        sock.shutdown(socket.SHUT_RDWR)


def fill_from(response: requests.Response, partial: Path, have: int, deadline: float,
              started: float, progress: Progress) -> None:
    """Write what ``response`` holds into ``partial``, after the ``have`` bytes there."""
    status = response.status_code
    if status == 416 and have:  # nothing beyond what we have: let the hash decide
        return
    if status == 206 and not resumes_at(response, have):
        partial.unlink()  # the next attempt starts over
        raise AttemptFailed("the server resumed at the wrong offset", transient=True)
    if status not in (200, 206):
        raise AttemptFailed(f"HTTP {status} {response.reason}", transient=status >= 500)
    length = response.headers.get("Content-Length", "")
    progress.total = int(length) if length.isdigit() else None
    with partial.open("ab" if status == 206 else "wb") as out:
        while block := response.raw.read1(CHUNK, decode_content=False):
            cancel.check()
            out.write(block)
            progress.advance(len(block))
            if time.monotonic() - started > deadline:
                raise AttemptFailed(f"still downloading after the {deadline:g} s "
                                    f"deadline ({progress.done} bytes)", transient=True)


def resumes_at(response: requests.Response, offset: int) -> bool:
    """True if a 206 answer continues exactly at ``offset``."""
    content_range = response.headers.get("Content-Range", "")
    return content_range.startswith(f"bytes {offset}-")


def read_blocks(path: Path, progress: Progress | None = None) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            cancel.check()
            if progress:
                progress.advance(len(block))
            yield block


def short_reason(exc: BaseException) -> str:
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


def apt_source(spec: SourceSpec, sources: Sources) -> None:
    """Fetch the .orig tarball with ``apt-get source --download-only``, verified."""
    assert spec.debian is not None
    apt_fetch(spec, spec.debian.file, ["source", "--download-only", spec.debian.package],
              sources, "deb-src")


def apt_download(deb: Deb, sources: Sources) -> None:
    """Fetch a binary package with ``apt-get download`` (which spells a version's epoch
    colon as %3a in the file's name), from its suite if it names one."""
    saved_as = f"{deb.name}_{deb.version.replace(':', '%3a')}_{deb.debian_arch}.deb"
    apt_fetch(deb, saved_as, ["download", f"{deb.name}:{deb.debian_arch}={deb.version}"],
              sources, "deb", deb.index_arch, deb.suite)


def apt_fetch(spec: Pinned, file: str, command: list[str], sources: Sources, kind: str,
              arch: str | None = None, suite: str | None = None) -> None:
    """Run an apt-get download command on private lists, then keep ``file`` if verified.

    The system's apt configuration is left alone: a private sources list holds ``kind``
    lines (deb-src, or deb for ``arch``) for the archives it uses (:func:`archives`), or
    for one Debian ``suite``, with its own lists dir under the apt state folder.
    """
    assert sources.apt_state is not None
    sources.partial_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="apt-", dir=sources.partial_dir))
    try:
        said = apt_get(sources.apt_state, kind, arch, command, workdir, suite)
        found = workdir / file
        if not found.is_file():
            raise AttemptFailed(f"{file} not obtained ({said})")
        partial = sources.partial_dir / spec.filename
        with locked(sources.partial_dir):
            os.replace(found, partial)
            if not verified(partial, spec, sources.dl_dir):
                raise AttemptFailed("wrong sha256, rejected")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def apt_get(apt_state: Path, kind: str, arch: str | None, command: list[str], cwd: Path,
            suite: str | None = None) -> str:
    """``apt-get update`` then ``apt-get COMMAND`` in ``cwd``, on the private state for
    ``kind`` lines (``arch``, ``suite``); apt's last line, for a message if it fails."""
    state = apt_state / "-".join(part for part in (kind, arch, suite) if part)
    state.mkdir(parents=True, exist_ok=True)
    # One apt at a time on the private state (apt runs without its own locks here):
    # packages fetched side by side, or two runs, would corrupt each other's lists.
    with locked(state):
        options = apt_options(state, kind, arch, suite)
        update = run_apt(["apt-get", *options, "update"])
        result = run_apt(["apt-get", *options, *command], cwd=cwd)
    lines = (result.stderr + result.stdout + update.stdout).strip().splitlines()
    return lines[-1] if lines else "no output"


def apt_options(state: Path, kind: str, arch: str | None, suite: str | None) -> list[str]:
    """``-o`` options pointing apt at a private list of ``kind`` lines and lists dir."""
    lists = state / "lists"
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    (state / "sources.list.d").mkdir(exist_ok=True)
    sources = state / "sources.list"
    os.utime(state)  # its last use, for cache gc
    options = f" [arch={arch}]" if arch else ""
    sources.write_text("".join(f"{kind}{options} {line}\n" for line in archives(suite)))
    return [
        "-o", f"Dir::Etc::SourceList={sources}",
        "-o", f"Dir::Etc::SourceParts={state / 'sources.list.d'}",
        "-o", f"Dir::State::Lists={lists}",
        "-o", "Debug::NoLocking=1",
        # The target's architecture, for these lists only (the host's dpkg is not told).
        *(["-o", f"APT::Architectures::={arch}"] if arch else []),
        # A named suite may come from a snapshot of the archive whose Release is past its
        # Valid-Until (sid's lasts a week); the package is trusted by its pinned sha256.
        *(["-o", "Acquire::Check-Valid-Until=false"] if suite else []),
        # As root apt drops to _apt for downloads, which cannot write a user's folders.
        *(["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []),
    ]


def archives(suite: str | None) -> list[str]:
    """``URI suite component`` lines: each Debian or Ubuntu archive apt is configured
    with; for a Debian ``suite``, its main at each Debian archive but the -security one."""
    fmt = "$(REPO_URI) $(RELEASE) $(COMPONENT) $(ORIGIN) $(TARGET_OF)"
    result = run_apt(["apt-get", "indextargets", "--format", fmt])
    found = set()
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[4] == "deb" and parts[3] in ("Debian", "Ubuntu"):
            uri, release, component, origin = parts[:4]
            if suite is None:
                found.add(f"{uri} {release} {component}")
            elif origin == "Debian" and not release.endswith("-security"):
                found.add(f"{uri} {suite} main")
    if not found:
        raise AttemptFailed(f"apt is configured with no Debian{'' if suite else ' or Ubuntu'} "
                            "archive")
    return sorted(found)


def run_apt(command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "LC_ALL": "C"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AttemptFailed(str(exc)) from None
