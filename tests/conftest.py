"""The fixtures: the default images, the kernels, a Debian kernel, the host-built C core.
(Helpers are in tests/helpers.py.)"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import (
    DEFAULT_CONFIG,
    REPO,
    USER_CACHE,
    X86_64_CONFIG,
    assert_ok,
    kernel_package,
    khib,
)

# The test files that take longest (QEMU boots, a build from scratch), longest first:
# `make test` hands files to its two workers in collection order, so these start first
# and the short files fill the gaps at the end.
LONGEST_FIRST = ("test_hibernate.py", "test_jump.py", "test_reproducible.py",
                 "test_freepages.py", "test_kconfig.py", "test_packaging.py",
                 "test_interrupts.py", "test_kernel.py", "test_boot.py", "test_engine.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: within a file, and among the rest, the usual order


@pytest.fixture(scope="session")
def default_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default i386 image, built once per run (through the user's build cache)."""
    outdir = tmp_path_factory.mktemp("default-image")
    assert_ok(khib("rootfs", "-c", DEFAULT_CONFIG, "-o", outdir))
    return outdir / "rootfs.gz"

@pytest.fixture(scope="session")
def debian_kernel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Debian's current amd64 kernel image, as linux-image-amd64 names it (cached)."""
    package = kernel_package()
    if package is None:  # apt's package lists may not have been fetched yet
        subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True)
        package = kernel_package()
    assert package, "apt knows no package that linux-image-amd64 depends on"
    cached = USER_CACHE / "test-kernels" / package / "vmlinuz"
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


@pytest.fixture(scope="session")
def core(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The C core built for the host from recipes/khib-core/src (warnings are errors)."""
    build = tmp_path_factory.mktemp("core")
    shutil.copytree(REPO / "recipes" / "khib-core" / "src", build, dirs_exist_ok=True)
    subprocess.run(["make", "-s", "CC=gcc"], cwd=build, check=True)
    return build
