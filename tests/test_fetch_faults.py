"""Network faults from a real server on 127.0.0.1: each ends in a clear report, bounded in
time, and only verified files in the download dir."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from khib_build.fsutil import sha256_of
from tests.helpers import khib, khib_argv, write_sample
from tests.httpserver import Fault, serving

BOUND = 25  # seconds a run may take with --fetch-deadline 2 --fetch-retries 1
FAULTS = {  # fault: what the report says about it
    "500": "HTTP 500",
    "404": "HTTP 404",
    "short": "IncompleteRead",
    "reset": "ProtocolError",  # the reset, or the cut it makes, whichever the client sees
    "wrong": "wrong sha256",
    "loop": "TooManyRedirects",
    "stall": "ReadTimeoutError: timed out",
    "trickle": "deadline",
}


def files_in(dl: Path) -> list[str]:
    return sorted(p.relative_to(dl).as_posix() for p in dl.rglob("*") if p.is_file())


def fetch(config: Path, dl: Path) -> tuple[int, str, float]:
    started = time.monotonic()
    result = khib("fetch", "-c", config, "--dl-dir", dl, "--fetch-deadline", 2,
                  "--fetch-retries", 1, timeout=120)
    return result.returncode, result.stderr, time.monotonic() - started


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_then_next_mirror(fault: str, tmp_path: Path) -> None:
    with serving() as server:
        sample = write_sample(tmp_path, [f"{server.url}/none/hello-1.0.tar.gz"],
                              [f"{server.url}/bad", f"{server.url}/good"])
        body = b"\0not the tarball" * 50 if fault == "wrong" else sample.tarball
        server.routes["/bad/hello-1.0.tar.gz"] = body if fault == "wrong" else Fault(fault, body)
        server.routes["/good/hello-1.0.tar.gz"] = sample.tarball
        status, stderr, seconds = fetch(sample.config, tmp_path / "dl")
    assert status == 0, stderr
    assert FAULTS[fault] in stderr
    assert seconds < BOUND
    assert files_in(tmp_path / "dl") == ["hello-1.0.tar.gz"]
    assert sha256_of(tmp_path / "dl" / "hello-1.0.tar.gz") == sample.sha256
    retried = "trying again" in stderr
    assert retried == (fault in ("500", "short", "reset", "stall", "trickle"))


def test_every_origin_failing_lists_each_and_stays_bounded(tmp_path: Path) -> None:
    with serving() as server:
        sample = write_sample(tmp_path, [f"{server.url}/up/hello-1.0.tar.gz"],
                              [f"{server.url}/{kind}" for kind in FAULTS])
        for kind in FAULTS:
            server.routes[f"/{kind}/hello-1.0.tar.gz"] = (
                b"junk" if kind == "wrong" else Fault(kind, sample.tarball))
        server.routes["/up/hello-1.0.tar.gz"] = Fault("500")
        status, stderr, seconds = fetch(sample.config, tmp_path / "dl")
    assert status == 1
    report = stderr[stderr.index("cannot obtain"):]
    for kind, reason in FAULTS.items():
        line = next(text for text in report.splitlines()
                    if f"/{kind}/hello-1.0.tar.gz:" in text)
        assert reason in line
    assert f"{server.url}/up/hello-1.0.tar.gz: HTTP 500" in report
    assert "Traceback" not in stderr
    assert seconds < 3 * BOUND
    # Nothing under the final name; at most resumable bytes kept under .partial/.
    assert files_in(tmp_path / "dl") in ([], [".partial/hello-1.0.tar.gz"])


def test_cut_download_resumes_with_a_range_request(tmp_path: Path) -> None:
    with serving() as server:
        sample = write_sample(tmp_path, [f"{server.url}/flaky/hello-1.0.tar.gz"], [])
        server.routes["/flaky/hello-1.0.tar.gz"] = Fault("cut-once", sample.tarball)
        status, stderr, _ = fetch(sample.config, tmp_path / "dl")
    assert status == 0, stderr
    half = len(sample.tarball) // 2
    assert server.requests == [("/flaky/hello-1.0.tar.gz", None),
                               ("/flaky/hello-1.0.tar.gz", f"bytes={half}-")]
    assert sha256_of(tmp_path / "dl" / "hello-1.0.tar.gz") == sample.sha256


@pytest.mark.parametrize("stale", ["good", "garbage"])
def test_partial_from_an_earlier_run_is_resumed_and_still_checked(stale: str,
                                                                  tmp_path: Path) -> None:
    with serving() as server:
        sample = write_sample(tmp_path, [f"{server.url}/r/hello-1.0.tar.gz"], [])
        server.routes["/r/hello-1.0.tar.gz"] = sample.tarball
        partial = tmp_path / "dl" / ".partial" / "hello-1.0.tar.gz"
        partial.parent.mkdir(parents=True)
        half = len(sample.tarball) // 2
        partial.write_bytes(sample.tarball[:half] if stale == "good" else b"x" * half)
        status, stderr, _ = fetch(sample.config, tmp_path / "dl")
    assert status == 0, stderr
    ranges = [r for _, r in server.requests]
    # Good bytes: one ranged request completes them. Garbage: the hash fails, and the
    # whole file is fetched again from its start.
    assert ranges == ([f"bytes={half}-"] if stale == "good" else [f"bytes={half}-", None])
    assert sha256_of(tmp_path / "dl" / "hello-1.0.tar.gz") == sample.sha256
    assert files_in(tmp_path / "dl") == ["hello-1.0.tar.gz"]


def test_two_runs_fetching_one_file_at_once(tmp_path: Path) -> None:
    """The .partial/ lock serialises them: both end with the one verified file."""
    with serving() as server:
        sample = write_sample(tmp_path, [f"{server.url}/slow/hello-1.0.tar.gz"], [])
        server.routes["/slow/hello-1.0.tar.gz"] = Fault("trickle-fast", sample.tarball)
        argv = khib_argv("fetch", "-c", sample.config, "--dl-dir", tmp_path / "dl")
        runs = [subprocess.Popen(argv, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        results = [(run.wait(timeout=120), run.stderr.read()) for run in runs]
    assert [status for status, _ in results] == [0, 0], results
    assert files_in(tmp_path / "dl") == ["hello-1.0.tar.gz"]
    assert sha256_of(tmp_path / "dl" / "hello-1.0.tar.gz") == sample.sha256
    # One of them downloaded it; the other found it verified once the lock was free.
    assert server.paths() == ["/slow/hello-1.0.tar.gz"]
