"""Same inputs, same bytes: from scratch, in other dirs, umasks, time zones and locales."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from khib_build import paths
from tests.conftest import DEFAULT_CONFIG, REPO, assert_ok, khib_argv

pytestmark = pytest.mark.slow


def build_from_scratch(outdir: Path, cwd: Path, umask: int, env: dict[str, str],
                       offline: bool) -> subprocess.CompletedProcess[str]:
    command = khib_argv("rootfs", "-c", DEFAULT_CONFIG, "-o", outdir, "--no-cache")
    if offline:  # in a network namespace of its own: any network use would fail
        command = ["unshare", "--net", *command, "--offline"]
    return subprocess.run(command, cwd=cwd, umask=umask, env=env, capture_output=True,
                          text=True, timeout=1800, check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="the offline run needs a network namespace")
def test_two_builds_from_scratch_are_byte_identical(default_image: Path, tmp_path: Path
                                                    ) -> None:
    # The session build filled the download dir; the first build uses it alone, offline.
    dl = paths.download_dir()
    assert (dl / "busybox-1.35.0.tar.bz2").is_file()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG", "TZ"))}
    first_env = {**base, "TZ": "Asia/Tokyo", "LANG": "de_DE.UTF-8", "LC_ALL": "de_DE.UTF-8"}
    second_env = {**base, "TZ": "America/New_York", "LANG": "C.UTF-8"}
    (tmp_path / "elsewhere").mkdir()
    first = build_from_scratch(tmp_path / "one", REPO, 0o077, first_env, offline=True)
    assert_ok(first)
    second = build_from_scratch(tmp_path / "elsewhere" / "two" / "out", tmp_path / "elsewhere",
                                0o002, second_env, offline=False)
    assert_ok(second)
    one = (tmp_path / "one" / "rootfs.gz").read_bytes()
    two = (tmp_path / "elsewhere" / "two" / "out" / "rootfs.gz").read_bytes()
    assert one == two
    assert one == default_image.read_bytes()  # and the same as the (cached) session build
    manifests = [(tmp_path / d / "manifest.json").read_text()
                 for d in ("one", "elsewhere/two/out")]
    assert manifests[0] == manifests[1]
    shutil.rmtree(tmp_path / "one" / "build")  # keep the test's footprint small
