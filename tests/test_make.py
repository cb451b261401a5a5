"""The README's first command, in a fresh copy of the repository."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO, fresh_copy

pytestmark = pytest.mark.slow


def test_make_rootfs_builds_and_reports_the_image(default_image: Path, tmp_path: Path) -> None:
    checkout = fresh_copy(tmp_path / "khib-build")
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "VIRTUAL_ENV")}
    result = subprocess.run(["make", "rootfs"], cwd=checkout, env=env, capture_output=True,
                            text=True, timeout=1800, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    image = checkout / "output" / "rootfs.gz"
    size = image.stat().st_size
    last = result.stdout.strip().splitlines()[-3:]
    assert re.fullmatch(rf"image: output/rootfs\.gz \({size} bytes, [0-9.]+ MiB\)", last[0])
    assert image.read_bytes() == default_image.read_bytes()
    # Quiet: a line for each set-up step and the build's own lines; pip's output is in
    # .setup.log.
    lines = (result.stdout + result.stderr).splitlines()
    assert len(lines) < 60, "\n".join(lines)
    assert "making the Python environment .venv (log: .setup.log)" in lines
    # The stock image has no warning a user could act on: the standard library's guarded
    # imports of modules the image leaves out are said as such.
    assert not any(re.match(r"checks: \d+ warning", line) for line in lines), lines
    assert any(re.match(r"checks: \d+ guarded import\(s\) of modules the image's Python "
                        r"leaves out", line) for line in lines), lines
    assert (checkout / ".setup.log").is_file()


def test_setup_installs_every_debian_package_before_any_build() -> None:
    """One apt-get for everything any target needs, in `make setup`, which every target
    that builds depends on: a package installed later cannot change the C library under
    finished builds (linux-source-6.1 once pulled a newer linux-libc-dev)."""
    text = (REPO / "Makefile").read_text()
    calls = re.findall(r"^\t\$\(call apt_ensure,(.*)\)$", text, re.M)
    assert calls == ["$(APT_ALL)", "python3 python3-venv"]  # the venv's own bootstrap
    lists = set(re.findall(r"^(APT_[A-Z]+) :=", text, re.M)) - {"APT_ALL"}
    everything = re.search(r"^APT_ALL := \$\(sort (.*)\)$", text, re.M)
    assert everything and lists <= set(re.findall(r"\$\((APT_[A-Z]+)\)", everything[1]))
    for target in ("rootfs", "kernel", "docs", "setup-test"):
        assert re.search(rf"^{target}: setup\b", text, re.M), target
