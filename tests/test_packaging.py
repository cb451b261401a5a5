"""For packagers: the sdist and wheel carry the recipes, configs and overlays; the wheel
builds the default image outside the repo; make install lays out a distribution's tree."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "-q", "-o", out, REPO], check=True,
                   capture_output=True)
    return out


def test_sdist_and_wheel_carry_recipes_configs_and_overlays(dists: Path) -> None:
    wheel = zipfile.ZipFile(next(dists.glob("*.whl"))).namelist()
    for path in ("khib_build/data/configs/khib.yaml", "khib_build/data/overlays/khib/init.j2",
                 "khib_build/data/recipes/khib-core/src/khib-save.c",
                 "khib_build/data/recipes/linux/patches/"
                 "0001-x86-kexec-reload-gdt-on-preserve-context-return.patch"):
        assert path in wheel
    with tarfile.open(next(dists.glob("*.tar.gz"))) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    assert {"recipes/busybox/recipe.yaml", "configs/khib-x86_64.yaml", "Makefile",
            "overlays/khib/init.j2"} <= names
    assert not any("__pycache__" in n for n in names)
    assert "LICENSE" in names and "khib_build-0.1.0.dist-info/licenses/LICENSE" in wheel


def test_the_installed_wheel_builds_the_default_image_outside_the_repo(
        dists: Path, default_image: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", venv], check=True)
    install = subprocess.run([venv / "bin" / "pip", "install", "-q", next(dists.glob("*.whl"))],
                             capture_output=True, text=True, check=False)
    assert install.returncode == 0, install.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([venv / "bin" / "khib-build", "rootfs", "-o", "out"], cwd=tmp_path,
                            capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # The same recipes and cache: the same bytes as the repo's own build.
    assert (tmp_path / "out" / "rootfs.gz").read_bytes() == default_image.read_bytes()


def test_make_install_lays_out_prefix_under_destdir(tmp_path: Path) -> None:
    root = tmp_path / "pkgroot"
    result = subprocess.run(["make", "-s", "install", f"DESTDIR={root}", "PREFIX=/usr"],
                            cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "warning" not in (result.stdout + result.stderr).lower(), result.stderr[-3000:]
    script = root / "usr" / "bin" / "khib-build"
    assert script.read_text().startswith("#!/usr/bin/python3")
    packages = next((root / "usr" / "lib").glob("python3*/*-packages"))
    assert (packages / "khib_build" / "data" / "configs" / "khib.yaml").is_file()
    manual = (root / "usr" / "share" / "man" / "man1" / "khib-build.1").read_text()
    assert manual.startswith(".TH KHIB")
    assert r"khib\-build \- build deterministic initramfs images for kexec jump" in manual
    for section in ("EXIT STATUS", "ENVIRONMENT", "FILES"):
        assert f".SH {section}" in manual, section
    assert "KHIB_CACHE_DIR" in manual and "SOURCE_DATE_EPOCH" in manual
    assert r"show\-info" in manual and r"legal\-info" in manual  # roff spells - as \-
    completion = root / "usr" / "share" / "bash-completion" / "completions" / "khib-build"
    assert "size-report" in completion.read_text()
    # bash loads the completion and completes a verb.
    probe = subprocess.run(
        ["bash", "-c", f"source {completion}; COMP_WORDS=(khib-build size-r); COMP_CWORD=1; "
         "_shtab_khib_build; echo ${COMPREPLY[@]}"], capture_output=True, text=True, check=False)
    assert probe.stdout.split() == ["size-report"], probe.stdout + probe.stderr
