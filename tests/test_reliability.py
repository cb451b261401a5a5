"""After faults of every kind, the download dir and the cache hold only verified entries."""

from __future__ import annotations

import hashlib
import signal
import subprocess
from pathlib import Path

import pytest

from khib_build.engine.cache import verify
from khib_build.fsutil import sha256_of
from tests.helpers import (
    assert_ok,
    cases,
    khib,
    make_tarball,
    mirrored_slow_sample,
    recipe_for,
    run_until,
    slow_sample,
)
from tests.httpserver import Fault, serving


def build(config: Path, root: Path, dl: Path, cache: Path, out: str = "out"
          ) -> subprocess.CompletedProcess[str]:
    return khib("rootfs", "-c", config, "-o", root / out, "--dl-dir", dl, "--cache-dir", cache,
                "--fetch-deadline", 3, "--fetch-retries", 1)


@pytest.mark.slow  # builds the sample package twice
def test_corrupt_cache_entry_is_detected_and_rebuilt(tmp_path: Path) -> None:
    config = mirrored_slow_sample(tmp_path)
    dl, cache = tmp_path / "dl", tmp_path / "cache"
    assert_ok(build(config, tmp_path, dl, cache, "a"))
    entry = next((cache / "packages" / "hello").iterdir())
    with (entry / "tree" / "big.bin").open("r+b") as handle:  # one flipped byte
        first = handle.read(1)
        handle.seek(0)
        handle.write(bytes([first[0] ^ 1]))
    assert not verify(entry)
    result = build(config, tmp_path, dl, cache, "b")
    assert_ok(result)
    assert "cache entry" in result.stderr and "fails its digest; removed" in result.stderr
    assert "hello 1.0: built" in result.stderr
    assert verify(next((cache / "packages" / "hello").iterdir()))


@pytest.mark.slow  # builds a package for each fault
def test_after_the_fault_suite_only_verified_entries_remain(tmp_path: Path) -> None:
    dl, cache = tmp_path / "dl", tmp_path / "cache"
    tarball = make_tarball()
    known = {hashlib.sha256(tarball).hexdigest()}
    with serving() as server:
        url = f"{server.url}/hello-1.0.tar.gz"
        config = slow_sample(tmp_path / "a", [url], [f"{server.url}/bad"])
        # Wrong bytes from a mirror, then a trickle killed mid-download, then a good server.
        server.routes["/bad/hello-1.0.tar.gz"] = b"\0" * 999
        server.routes["/hello-1.0.tar.gz"] = Fault("trickle", tarball)
        status, _ = run_until(config, tmp_path / "a", "trying " + url, signal.SIGKILL, dl, cache)
        assert status == -signal.SIGKILL
        server.routes["/hello-1.0.tar.gz"] = tarball
        # Killed while storing in the cache, then completed.
        status, _ = run_until(config, tmp_path / "a", "storing in the build", signal.SIGKILL, dl,
                              cache)
        assert status == -signal.SIGKILL
        assert_ok(build(config, tmp_path / "a", dl, cache))
    # Hostile archives fetched into the same download dir and refused at extraction.
    for attack, (data, _) in cases(tmp_path / "outside").items():
        root = tmp_path / attack
        known.add(hashlib.sha256(data).hexdigest())
        assert build(recipe_for(root, data), root, dl, cache).returncode == 1
    # What remains under a final name in the download dir is verified bytes...
    finals = [p for p in dl.iterdir() if p.is_file()]
    assert finals and all(sha256_of(p) in known for p in finals)
    # ... and every cache entry verifies; unfinished ones are only .tmp-* folders.
    entries = [e for e in (cache / "packages").glob("*/*") if not e.name.startswith(".tmp-")]
    assert entries and all(verify(e) for e in entries)

