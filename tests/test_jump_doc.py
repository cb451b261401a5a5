"""docs/jump.md's five commands, run exactly as the doc prints them: build the x86_64
image and kernel, make a disk, hibernate a guest that carries its own B, resume it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slow


def five_commands() -> list[str]:
    """The shell block of "Hibernate a QEMU guest in five commands", a command a line."""
    text = (REPO / "docs" / "jump.md").read_text()
    section = text.split("\n## Hibernate a QEMU guest in five commands\n", 1)[1]
    block = re.search(r"^```sh\n(.*?)^```$", section, re.S | re.M)
    assert block
    return block[1].strip().splitlines()


def test_the_five_commands_hibernate_and_resume_a_guest(tmp_path: Path, kernel_x86_64: Path,
                                                        image_x86_64: Path) -> None:
    """From a copy of the checkout's configs and overlays (the fixtures put the kernel and
    packages in the shared cache, so the build commands reuse them)."""
    commands = five_commands()
    assert len(commands) == 5
    for folder in ("configs", "overlays"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    outputs = []
    for command in commands:
        result = subprocess.run(["bash", "-e", "-c", command], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=1800, check=False)
        assert result.returncode == 0, \
            f"{command}\n{result.stdout[-4000:]}\n{result.stderr[-3000:]}"
        outputs.append(result.stdout)
    hibernated, resumed = outputs[3], outputs[4]
    # (The kernel's command line, echoed on the console, holds the command's own text.)
    assert "khib: A is saved; powering off" in hibernated
    assert re.search(r"^A runs$", hibernated, re.M) and not re.search(r"A is back: \d", hibernated)
    assert "khib: resumed from hibernation (/dev/vda)" in resumed, resumed[-4000:]
    assert re.search(r"^A is back: 0$", resumed, re.M)
    assert not re.search(r"^A runs$", resumed, re.M)  # the same command went on, not anew
