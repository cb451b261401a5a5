"""The fixtures: the default images, the kernels, a Debian kernel, the host-built C core.
(Helpers are in tests/helpers.py.)"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.guest import Target
from tests.helpers import (
    DEFAULT_CONFIG,
    REPO,
    USER_CACHE,
    X86_64_CONFIG,
    assert_ok,
    kernel_package,
    khib,
    vmlinux_of,
)
from tests.jumps import JumpRun, read_run, run_scenario

# The test files that take longest (QEMU boots, packages compiled again), longest first:
# `make test` hands files to its workers in collection order, so these start first and
# the short files fill the gaps at the end. Files that read a boot another file's test
# runs go last, when that boot is done (a worker would otherwise wait for it).
LONGEST_FIRST = ("test_kernels.py", "test_system.py", "test_jump.py", "test_hibernate.py",
                 "test_jump_again.py",
                 "test_reproducible.py", "test_powercut.py", "test_kconfig.py",
                 "test_packaging.py", "test_interrupts.py", "test_kernel.py", "test_boot.py",
                 "test_engine.py")
READERS_LAST = ("test_freepages.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        if name in READERS_LAST:
            return len(LONGEST_FIRST) + 1
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: within a file, and among the rest, the usual order


def built_once(factory: pytest.TempPathFactory, name: str,
               build: Callable[[Path], None]) -> Path:
    """The folder ``name``, made by ``build`` once per run: pytest-xdist's workers share
    it (the first builds it under a lock; the others wait, then read it). Tests only read
    these folders."""
    base = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's temp dir, above each worker's own
    folder = base / name
    with (base / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / ".built").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / ".built").touch()
    return folder


def built_output(factory: pytest.TempPathFactory, name: str, verb: str, config: Path,
                 output: str) -> Path:
    """The file ``output`` that `khib-build VERB` writes for ``config`` (through the user's
    build cache), built once per run into the folder ``name``."""
    def build(outdir: Path) -> None:
        assert_ok(khib(verb, "-c", config, "-o", outdir, timeout=3600))
    return built_once(factory, name, build) / output


@pytest.fixture(scope="session")
def default_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default i386 image, built once per run."""
    return built_output(tmp_path_factory, "default-image", "rootfs", DEFAULT_CONFIG,
                        "rootfs.gz")


@pytest.fixture(scope="session")
def debian_kernel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Debian's current amd64 kernel, as linux-image-amd64 names it (cached): its vmlinux,
    taken out of the package's bzImage, which QEMU boots through the kernel's PVH entry.
    The same kernel, less the bzImage's own decompression (xz, 3 s under TCG)."""
    package = kernel_package()
    if package is None:  # apt's package lists may not have been fetched yet
        subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True)
        package = kernel_package()
    assert package, "apt knows no package that linux-image-amd64 depends on"
    cached = USER_CACHE / "test-kernels" / package / "vmlinux"
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
    cached.with_suffix(".tmp").write_bytes(vmlinux_of(vmlinuz.read_bytes()))
    os.replace(cached.with_suffix(".tmp"), cached)
    return cached


@pytest.fixture(scope="session")
def kernel_i386(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return built_output(tmp_path_factory, "kernel-i386", "kernel", DEFAULT_CONFIG, "bzImage")


@pytest.fixture(scope="session")
def kernel_x86_64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return built_output(tmp_path_factory, "kernel-x86_64", "kernel", X86_64_CONFIG, "bzImage")


@pytest.fixture(scope="session")
def image_x86_64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default x86_64 image, built once per run."""
    return built_output(tmp_path_factory, "image-x86_64", "rootfs", X86_64_CONFIG, "rootfs.gz")


@pytest.fixture
def jump_run(target: Target, tmp_path_factory: pytest.TempPathFactory) -> JumpRun:
    """The jump scenario's QEMU run on ``target`` (tests/jumps.py), once per run and arch:
    test_jump and test_freepages read its console and disks."""
    folder = built_once(tmp_path_factory, f"jumps-{target.arch}",
                        lambda folder: run_scenario(target, folder))
    return read_run(folder)


@pytest.fixture(scope="session")
def core(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The C core built for the host from recipes/khib-core/src (warnings are errors)."""
    def build(folder: Path) -> None:
        shutil.copytree(REPO / "recipes" / "khib-core" / "src", folder, dirs_exist_ok=True)
        subprocess.run(["make", "-s", "CC=gcc"], cwd=folder, check=True)
    return built_once(tmp_path_factory, "core", build)


def build_host_core(folder: Path, *flags: str) -> None:
    """khib-core for the host in ``folder``, linked dynamically, with ``flags``: the
    Makefile's SOURCES compiled directly under its STRICT warnings, a link per program."""
    src = REPO / "recipes" / "khib-core" / "src"
    strict, sources, lz4, links = (line.split() for line in subprocess.run(
        ["make", "-s", "--no-print-directory", "--eval", "print-%: ; @echo $($*)",
         "print-STRICT", "print-SOURCES", "print-LZ4", "print-LINKS"],
        cwd=src, capture_output=True, text=True, check=True).stdout.splitlines())
    subprocess.run(["gcc", *strict, *flags, "-o", folder / "khib-core", *sources, *lz4],
                   cwd=src, check=True)
    for link in links:
        (folder / link).symlink_to("khib-core")


@pytest.fixture(scope="session")
def sanitized_core(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The C core for the host under AddressSanitizer and UBSan, any report fatal."""
    return built_once(tmp_path_factory, "core-sanitized", lambda folder: build_host_core(
        folder, "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g", "-O1"))


@pytest.fixture(scope="session")
def thread_sanitized_core(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The C core for the host under ThreadSanitizer (khib-save's threads)."""
    return built_once(tmp_path_factory, "core-tsan", lambda folder: build_host_core(
        folder, "-fsanitize=thread", "-g", "-O1"))


@pytest.fixture(scope="session")
def plain_core(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The C core for the host, linked dynamically: an LD_PRELOAD shim reaches its calls."""
    return built_once(tmp_path_factory, "core-dynamic",
                      lambda folder: build_host_core(folder, "-O1"))
