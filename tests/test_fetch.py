"""Fetching from a real HTTP server on 127.0.0.1: mirrors, hashes, offline use."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from khib_build.fsutil import sha256_of
from khib_build.sources.fetch import debian_like
from tests.helpers import assert_ok, khib, khib_argv, write_sample
from tests.httpserver import serving


def listing(dl: Path) -> list[str]:
    return sorted(p.relative_to(dl).as_posix() for p in dl.rglob("*") if p.is_file())


def test_wrong_bytes_rejected_next_mirror_used(tmp_path: Path) -> None:
    with serving() as server:
        sample = write_sample(tmp_path, [f"{server.url}/upstream/hello-1.0.tar.gz"],
                              [f"{server.url}/bad", f"{server.url}/good"])
        server.routes["/bad/hello-1.0.tar.gz"] = b"not the tarball" * 100
        server.routes["/good/hello-1.0.tar.gz"] = sample.tarball
        dl = tmp_path / "dl"
        result = khib("fetch", "-c", sample.config, "--dl-dir", dl)
    assert_ok(result)
    assert server.paths() == ["/bad/hello-1.0.tar.gz", "/good/hello-1.0.tar.gz"]
    assert "wrong sha256" in result.stderr
    assert (dl / "hello-1.0.tar.gz").read_bytes() == sample.tarball
    assert listing(dl) == ["hello-1.0.tar.gz"]  # nothing else kept, .partial/ empty


def test_bad_file_in_download_dir_is_removed_and_refetched(tmp_path: Path) -> None:
    with serving() as server:
        sample = write_sample(tmp_path, [f"{server.url}/upstream/hello-1.0.tar.gz"], [])
        server.routes["/upstream/hello-1.0.tar.gz"] = sample.tarball
        dl = tmp_path / "dl"
        dl.mkdir()
        (dl / "hello-1.0.tar.gz").write_bytes(b"truncated")
        result = khib("fetch", "-c", sample.config, "--dl-dir", dl)
    assert_ok(result)
    assert (dl / "hello-1.0.tar.gz").read_bytes() == sample.tarball


def test_every_origin_failing_is_reported_and_nothing_kept(tmp_path: Path) -> None:
    with serving() as server:
        sample = write_sample(tmp_path, [f"{server.url}/upstream/hello-1.0.tar.gz"],
                              [f"{server.url}/bad"])
        server.routes["/bad/hello-1.0.tar.gz"] = b"wrong"
        dl = tmp_path / "dl"
        result = khib("fetch", "-c", sample.config, "--dl-dir", dl)
        built = khib("rootfs", "-c", sample.config, "--dl-dir", dl, "-o", tmp_path / "out")
    first = (f"khib-build: error: package hello: cannot obtain hello-1.0.tar.gz: "
             f"{server.url}/upstream/hello-1.0.tar.gz: HTTP 404 Not Found")
    for run in (result, built):  # one first line naming the package, file and last fault
        assert run.returncode == 1
        assert next(line for line in run.stderr.splitlines()
                    if line.startswith("khib-build: error:")) == first
    assert f"{server.url}/bad/hello-1.0.tar.gz: wrong sha256" in result.stderr
    assert f"{server.url}/upstream/hello-1.0.tar.gz: HTTP 404" in result.stderr
    assert "Traceback" not in result.stderr
    assert listing(dl) == []


def test_fetched_source_is_built_into_the_image(tmp_path: Path) -> None:
    with serving() as server:
        sample = write_sample(tmp_path, [f"{server.url}/hello-1.0.tar.gz"], [])
        server.routes["/hello-1.0.tar.gz"] = sample.tarball
        out = tmp_path / "out"
        result = khib("rootfs", "-c", sample.config, "-o", out, "--dl-dir", tmp_path / "dl",
                      "--no-cache")
    assert_ok(result)
    assert "image: " in result.stdout
    hello = out / "rootfs" / "usr" / "bin" / "hello"
    assert hello.read_bytes()[:5] == b"\x7fELF\x01"  # built for i386 from the fetched source
    assert "usr/bin/hello" in khib("inspect", out / "rootfs.gz").stdout


needs_netns = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="proving no network use needs root for a private network namespace",
)


def offline_khib(*args: object) -> subprocess.CompletedProcess[str]:
    """khib-build in a network namespace of its own: any network use fails."""
    return subprocess.run(["unshare", "--net", *khib_argv(*args)], capture_output=True,
                          text=True, check=False, timeout=900)


@needs_netns
def test_offline_uses_only_the_download_dir_and_file_mirrors(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    sample = write_sample(tmp_path, ["http://127.0.0.1:9/hello-1.0.tar.gz"],
                          ["http://127.0.0.1:9/mirror", mirror.as_uri()])
    (mirror / sample.filename).write_bytes(sample.tarball)
    dl = tmp_path / "dl"
    # From a file:// mirror, with no network at all.
    assert_ok(offline_khib("rootfs", "-c", sample.config, "-o", tmp_path / "a",
                           "--dl-dir", dl, "--offline", "--no-cache"))
    assert (dl / sample.filename).read_bytes() == sample.tarball
    # From the download dir alone.
    (mirror / sample.filename).unlink()
    assert_ok(offline_khib("rootfs", "-c", sample.config, "-o", tmp_path / "b",
                           "--dl-dir", dl, "--offline", "--no-cache"))


def test_offline_with_empty_download_dir_names_the_missing_file(tmp_path: Path) -> None:
    sample = write_sample(tmp_path, ["http://127.0.0.1:9/hello-1.0.tar.gz"], [])
    dl = tmp_path / "dl"
    result = khib("rootfs", "-c", sample.config, "-o", tmp_path / "out", "--dl-dir", dl,
                  "--offline", "--no-cache")
    assert result.returncode == 1
    assert "package hello: cannot obtain hello-1.0.tar.gz" in result.stderr
    assert f"{dl / 'hello-1.0.tar.gz'}: not there" in result.stderr
    assert "offline" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(not debian_like(), reason="Debian's source archive needs a Debian-like host")
def test_debian_source_archive_supplies_the_upstream_tarball(tmp_path: Path) -> None:
    """busybox.net is out of reach here; apt-get source yields the same bytes, for two
    packages fetched side by side on one fresh private apt state."""
    dl = tmp_path / "dl"
    result = khib("fetch", "--dl-dir", dl, "--cache-dir", tmp_path / "cache", "busybox",
                  "kexec-tools")
    assert_ok(result)
    assert "from apt-get source busybox (busybox_1.35.0.orig.tar.bz2)" in result.stderr
    assert "from apt-get source kexec-tools (kexec-tools_2.0.25.orig.tar.xz)" in result.stderr
    assert listing(dl) == ["busybox-1.35.0.tar.bz2", "kexec-tools-2.0.25.tar.xz"]
    assert sha256_of(dl / "busybox-1.35.0.tar.bz2") == (
        "faeeb244c35a348a334f4a59e44626ee870fb07b6884d68c10ae8bc19f83a694")
    sources = (tmp_path / "cache" / "apt-sources" / "deb-src" / "sources.list").read_text()
    assert sources.startswith("deb-src ")  # a private list; the system's stays untouched
