"""Killed and interrupted runs: at each stage, the next run succeeds with a correct image;
SIGINT exits 130 with one line and leaves no temporary files or build processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import (
    BIG,
    assert_ok,
    interruptible,
    khib,
    khib_argv,
    make_tarball,
    mirrored_slow_sample,
    run_until,
    slow_sample,
    write_sample,
)
from tests.httpserver import Fault, serving


@contextlib.contextmanager
def small_tmpfs(path: Path, megabytes: int = 8) -> Iterator[Path]:
    """A small tmpfs mounted at ``path`` for the duration."""
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(path)],
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def leftovers(root: Path) -> list[str]:
    temporary = [p for p in root.rglob("*") if p.name.endswith(".tmp") or ".tmp-" in p.name]
    return sorted(str(p.relative_to(root)) for p in temporary)


def assert_next_run_is_correct(config: Path, root: Path) -> None:
    result = khib("rootfs", "-c", config, "-o", root / "out", "--dl-dir", root / "dl",
                  "--cache-dir", root / "cache")
    assert_ok(result)
    listing = khib("inspect", root / "out" / "rootfs.gz").stdout
    assert f"{BIG} big.bin" in listing and "usr/bin/hello" in listing
    assert khib("diff", root / "out" / "rootfs.gz", root / "out" / "rootfs.gz").returncode == 0


STAGES = {  # stage: the progress line after which the signal is sent
    "fetch": "trying http",
    "extract": "hello 1.0: unpacking",
    "build": "hello 1.0: building",
    "cache store": "storing in the build cache",
    "pack": "packing rootfs.gz",
}


@pytest.mark.slow  # builds the sample package ten times
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
@pytest.mark.parametrize("stage", list(STAGES))
def test_signal_at_each_stage_then_the_next_run_succeeds(stage: str, sig: int,
                                                         tmp_path: Path) -> None:
    tarball = make_tarball()
    with serving() as server:
        config = slow_sample(tmp_path, [f"{server.url}/hello-1.0.tar.gz"], [])
        # While fetching, the server trickles, so the signal lands mid-download.
        server.routes["/hello-1.0.tar.gz"] = Fault("trickle", tarball) \
            if stage == "fetch" else tarball
        status, stderr = run_until(config, tmp_path, STAGES[stage], sig)
        if sig == signal.SIGKILL:
            assert status == -signal.SIGKILL
        else:
            assert status == 130, stderr
            assert stderr.strip().splitlines()[-1] == "khib-build: interrupted"
            assert "Traceback" not in stderr
            assert leftovers(tmp_path) == []
            running = subprocess.run(["pgrep", "-f", "khib-interrupt-test"], check=False,
                                     capture_output=True)
            assert running.returncode == 1  # no build step left behind
        assert not (tmp_path / "out" / "rootfs.gz").exists()
        server.routes["/hello-1.0.tar.gz"] = tarball
        assert_next_run_is_correct(config, tmp_path)
    assert not (tmp_path / "dl" / ".partial" / "hello-1.0.tar.gz").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_full_disk_gives_a_clear_error_and_no_partial_output(tmp_path: Path) -> None:
    config = mirrored_slow_sample(tmp_path)
    with small_tmpfs(tmp_path / "small") as small:
        result = khib("rootfs", "-c", config, "-o", small / "out", "--dl-dir", tmp_path / "dl",
                      "--cache-dir", tmp_path / "cache")
        assert result.returncode == 1
        assert "No space left on device" in result.stderr.strip().splitlines()[-1]
        assert "Traceback" not in result.stderr
        assert not (small / "out" / "rootfs.gz").exists()
        assert leftovers(small) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_full_cache_disk_gives_a_clear_error_and_no_half_entry(tmp_path: Path) -> None:
    config = mirrored_slow_sample(tmp_path)
    # Room for the C library's sysroot (about 18 MiB), not for the package's 48 MiB.
    with small_tmpfs(tmp_path / "small", 40) as small:
        result = khib("rootfs", "-c", config, "-o", tmp_path / "out", "--dl-dir",
                      tmp_path / "dl", "--cache-dir", small / "cache")
        assert result.returncode == 1
        last = result.stderr.strip().splitlines()[-1]
        assert last == (f"khib-build: error: hello: cannot store it in the build cache "
                        f"{small / 'cache'}: No space left on device (copying "
                        f"{tmp_path / 'out' / 'staging' / 'hello'})")
        assert "Traceback" not in result.stderr
        entries = small / "cache" / "packages" / "hello"
        assert not entries.exists() or list(entries.iterdir()) == []
        assert not (tmp_path / "out" / "rootfs.gz").exists()


@pytest.mark.parametrize(("verb", "fault"), [("fetch", "stall"), ("rootfs", "stall"),
                                             ("fetch", "hang")])
def test_ctrl_c_during_a_stalled_download_stops_within_a_second(verb: str, fault: str,
                                                                tmp_path: Path) -> None:
    """The download thread sits in a socket read (of the body, or of headers that never
    come) with no deadline near; the interrupt ends or abandons that read, so the run
    stops at once (3 s allowed on a loaded machine)."""
    dl = tmp_path / "dl"
    with serving() as server:
        sample = write_sample(tmp_path, [f"{server.url}/slow/hello-1.0.tar.gz"], [])
        server.routes["/slow/hello-1.0.tar.gz"] = Fault(fault, sample.tarball)
        extra = ["-o", tmp_path / "out", "--no-cache"] if verb == "rootfs" else []
        process = subprocess.Popen(
            interruptible(khib_argv(verb, "-c", sample.config, "--dl-dir", dl,
                                    "--fetch-deadline", 300, *extra)),
            stderr=subprocess.PIPE, text=True)
        assert process.stderr is not None
        for line in process.stderr:
            if "fetch hello-1.0.tar.gz: trying" in line:
                break
        time.sleep(1)  # the download is now blocked in its read
        sent = time.monotonic()
        process.send_signal(signal.SIGINT)
        status = process.wait(timeout=60)
        took = time.monotonic() - sent
        rest = process.stderr.read()
    assert status == 130, rest
    assert took < 3, f"stopped {took:.1f} s after the interrupt"
    assert rest.strip().splitlines()[-1] == "khib-build: interrupted"
    assert not (dl / "hello-1.0.tar.gz").exists()
