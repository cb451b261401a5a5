"""Shared fixtures: the khib-build command, the default image, a Debian kernel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from khib_build import paths

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "configs" / "khib.yaml"
X86_64_CONFIG = REPO / "configs" / "khib-x86_64.yaml"


def khib_argv(*args: object) -> list[str]:
    """The khib-build command line with ``args``, run by this test run's interpreter."""
    return [sys.executable, "-m", "khib_build", *map(str, args)]


def khib(*args: object, env: dict[str, str] | None = None, cwd: Path | None = None,
         timeout: float = 1800, umask: int = -1) -> subprocess.CompletedProcess[str]:
    """Run the khib-build command line as a user would; capture its output."""
    return subprocess.run(khib_argv(*args),
                          capture_output=True, text=True, env=env, cwd=cwd or REPO,
                          timeout=timeout, umask=umask, check=False)


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="session")
def default_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default i386 image, built once per run (through the user's build cache)."""
    outdir = tmp_path_factory.mktemp("default-image")
    assert_ok(khib("rootfs", "-c", DEFAULT_CONFIG, "-o", outdir))
    return outdir / "rootfs.gz"


def kernel_package() -> str | None:
    """The versioned kernel package linux-image-amd64 depends on, as apt reports it."""
    depends = subprocess.run(["apt-cache", "depends", "linux-image-amd64"],
                             capture_output=True, text=True, check=False).stdout
    return next((line.split(":", 1)[1].strip() for line in depends.splitlines()
                 if line.strip().startswith("Depends:") and "linux-image-" in line), None)


@pytest.fixture(scope="session")
def debian_kernel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Debian's current amd64 kernel image, as linux-image-amd64 names it (cached)."""
    package = kernel_package()
    if package is None:  # apt's package lists may not have been fetched yet
        subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True)
        package = kernel_package()
    assert package, "apt knows no package that linux-image-amd64 depends on"
    cached = paths.user_cache_root() / "test-kernels" / package / "vmlinuz"
    if cached.is_file():
        return cached
    work = tmp_path_factory.mktemp("kernel")
    subprocess.run(["apt-get", "download", package], cwd=work, check=True,
                   capture_output=True)
    deb = next(work.glob("*.deb"))
    tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(work), "--wildcards", "./boot/vmlinuz-*"],
                   stdin=tar.stdout, check=True)
    assert tar.wait() == 0
    vmlinuz = next((work / "boot").glob("vmlinuz-*"))
    cached.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(vmlinuz, cached.with_suffix(".tmp"))
    os.replace(cached.with_suffix(".tmp"), cached)
    return cached


def built_kernel(factory: pytest.TempPathFactory, config: Path) -> Path:
    """The bzImage `khib-build kernel` builds for ``config`` (through the user's cache)."""
    outdir = factory.mktemp("kernel")
    assert_ok(khib("kernel", "-c", config, "-o", outdir, timeout=3600))
    return outdir / "bzImage"


@pytest.fixture(scope="session")
def kernel_i386(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return built_kernel(tmp_path_factory, DEFAULT_CONFIG)


@pytest.fixture(scope="session")
def kernel_x86_64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return built_kernel(tmp_path_factory, X86_64_CONFIG)


@pytest.fixture(scope="session")
def image_x86_64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default x86_64 image, built once per run."""
    outdir = tmp_path_factory.mktemp("image-x86_64")
    assert_ok(khib("rootfs", "-c", X86_64_CONFIG, "-o", outdir))
    return outdir / "rootfs.gz"
