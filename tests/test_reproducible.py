"""Same inputs, same bytes: from scratch, in other dirs, umasks, time zones and locales."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import DEFAULT_CONFIG, assert_ok, khib_argv, user_download_dir

pytestmark = pytest.mark.slow


def build_from_scratch(outdir: Path, cwd: Path, umask: int, env: dict[str, str],
                       offline: bool) -> subprocess.CompletedProcess[str]:
    command = khib_argv("rootfs", "-c", DEFAULT_CONFIG, "-o", outdir, "--no-cache")
    if offline:  # in a network namespace of its own: any network use would fail
        command = ["unshare", "--net", *command, "--offline"]
    return subprocess.run(command, cwd=cwd, umask=umask, env=env, capture_output=True,
                          text=True, timeout=1800, check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="the offline run needs a network namespace")
def test_a_build_from_scratch_is_byte_identical(default_image: Path, tmp_path: Path) -> None:
    """Every package rebuilt (CPython and its .pyc files included), offline, in another
    dir, umask, time zone and locale: the same bytes as the session's build."""
    # The session build filled the download dir; this build uses it alone, offline.
    dl = user_download_dir()
    assert (dl / "busybox-1.35.0.tar.bz2").is_file()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG", "TZ"))}
    env = {**base, "TZ": "Asia/Tokyo", "LANG": "de_DE.UTF-8", "LC_ALL": "de_DE.UTF-8"}
    (tmp_path / "elsewhere").mkdir()
    out = tmp_path / "elsewhere" / "two" / "out"
    assert_ok(build_from_scratch(out, tmp_path / "elsewhere", 0o077, env, offline=True))
    assert (out / "rootfs.gz").read_bytes() == default_image.read_bytes()
    assert (out / "manifest.json").read_text() == \
        (default_image.parent / "manifest.json").read_text()
    shutil.rmtree(out / "build")  # keep the test's footprint small
