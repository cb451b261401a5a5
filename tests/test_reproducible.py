"""Same inputs, same bytes, the packages compiled again: a build under reprotest's
variations (tests/reprotesting.py) against the session's build."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.helpers import khib_argv, user_download_dir
from tests.reprotesting import DEFAULT_PACKAGES, assert_varied, reprotest

pytestmark = pytest.mark.slow


@pytest.mark.skipif(os.geteuid() != 0, reason="the offline run needs a network namespace")
def test_a_build_from_scratch_is_byte_identical(default_image: Path, tmp_path: Path) -> None:
    """reprotest's experiment build, `khib-build rebuild --offline` of the default image
    in a network namespace of its own: busybox, kexec-tools, lz4, khib-core and
    khib-tools compiled again from the download dir alone, python3 (its interpreter
    and standard library) from the build cache (compiling it again doubles the suite's
    longest build: its reproducibility under these variations was shown from scratch,
    every package compiled, at 5b06a87), and the image made, under every variation
    reprotest applies here (another dir, kernel personality, CPU count, the clock 400
    days ahead, directory listings shuffled, host name, HOME, locale, PATH, time zone,
    umask ...), as nobody:nogroup. Its control is the session's build of the image
    (reprotest --control-build), built once: the same rootfs.gz and manifest.json, byte
    for byte. Reports kept as tests/reprotesting.py's keep("from-scratch")."""
    # The session build filled the download dir; this build uses it alone, offline.
    assert (user_download_dir() / "busybox-1.35.0.tar.bz2").is_file()
    control = tmp_path / "control" / "source-root" / "out"
    control.mkdir(parents=True)
    for name in ("rootfs.gz", "manifest.json"):
        shutil.copy2(default_image.parent / name, control)
    compiled = [name for name in DEFAULT_PACKAGES if name != "python3"]
    command = khib_argv("rebuild", "-c", "configs/khib.yaml", "-o", "out", "--offline",
                        *compiled)
    run = reprotest("from-scratch", tmp_path, command, control=tmp_path / "control",
                    offline=True)
    assert run.returncode == 0, run.explained()
    assert "Reproduction successful" in run.log
    assert_varied(run)
    assert run.statuses() == {**{(name, "built"): 1 for name in compiled},
                              ("python3", "cached"): 1}, run.log
