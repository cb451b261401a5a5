"""docs/formats.md's walk-through, run exactly as the doc prints it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO


def walkthrough_blocks() -> list[str]:
    """The shell blocks of "Your first package", up to its Debian part."""
    text = (REPO / "docs" / "formats.md").read_text()
    section = text.split("\n## Your first package\n", 1)[1].split("\n### A Debian package\n")[0]
    return re.findall(r"^```sh\n(.*?)^```$", section, re.S | re.M)


@pytest.mark.slow
def test_the_first_package_walkthrough_builds_and_boots(tmp_path: Path, kernel_i386: Path,
                                                         default_image: Path) -> None:
    """A C program and a Python package added to the default image, booted with each
    as the image's command. (The fixtures put the kernel and python3 in the shared cache,
    so the doc's `khib-build kernel` and `rootfs` reuse them.)"""
    blocks = walkthrough_blocks()
    assert len(blocks) == 3
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for block in blocks:
        result = subprocess.run(["bash", "-e", "-c", block], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=1800, check=False)
        assert result.returncode == 0, f"{block}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert "'hello from Python 3.11.2' found" in result.stderr
