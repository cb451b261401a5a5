"""For packagers: the sdist and wheel carry the recipes, configs and overlays; the wheel
builds the default image outside the repo; make install lays out a distribution's tree;
the Debian package builds with Debian's tools, passes lintian and builds the same image."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.helpers import REPO, fresh_copy, make_tarball, write_sample

pytestmark = pytest.mark.slow


# A Debian build's PATH: the system's tools, whatever else the caller's PATH puts first.
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "-q", "--no-isolation", "-o", out, REPO],
                   check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def source_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkout's files in a folder of their own, as a packager unpacks them."""
    return fresh_copy(tmp_path_factory.mktemp("source") / "khib-build")


def test_sdist_and_wheel_carry_recipes_configs_and_overlays(dists: Path) -> None:
    wheel = zipfile.ZipFile(next(dists.glob("*.whl"))).namelist()
    for path in ("khib_build/data/configs/khib.yaml", "khib_build/data/overlays/khib/init.j2",
                 "khib_build/data/recipes/khib-core/src/khib-save.c",
                 "khib_build/data/recipes/linux/patches/b/"
                 "0001-x86-kexec-give-the-memory-below-640k-back-on-jump-back.patch",
                 "khib_build/data/recipes/linux/patches/backports/"
                 "0001-x86-kexec-restore-gdt-on-return-from-preserve_context-kexec.patch"):
        assert path in wheel
    with tarfile.open(next(dists.glob("*.tar.gz"))) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    assert {"recipes/busybox/recipe.yaml", "configs/khib-x86_64.yaml", "Makefile",
            "overlays/khib/init.j2"} <= names
    assert not any("__pycache__" in n for n in names)
    assert "LICENSE" in names and "khib_build-0.1.0.dist-info/LICENSE" in wheel


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
         "_khib_build; echo ${COMPREPLY[@]}"], capture_output=True, text=True, check=False)
    assert probe.stdout.split() == ["size-report"], probe.stdout + probe.stderr
    probe = subprocess.run(
        ["bash", "-c", f"source {completion}; COMP_WORDS=(khib-build cache ''); COMP_CWORD=2; "
         "_khib_build; echo ${COMPREPLY[@]}"], capture_output=True, text=True, check=False)
    assert probe.stdout.split() == ["stats", "gc"], probe.stdout + probe.stderr


def test_debian_python_packages_run_the_installed_khib_build(
        source_tree: Path, default_image: Path, tmp_path: Path) -> None:
    """/usr/bin/python3 with Debian's python3-* packages alone (a venv that sees only the
    system's site packages; khib-build installed from its source tree with Debian's
    setuptools, without dependencies or an index): it builds
    the default image to the same bytes, builds a package from a tarball (unpacked by
    Debian's python3-libarchive-c 2.9), packs, inspects and describes."""
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", venv],
                   check=True)
    install = subprocess.run([venv / "bin" / "pip", "install", "-q", "--no-deps", "--no-index",
                              "--no-build-isolation", "."], cwd=source_tree,
                             capture_output=True, text=True, check=False)
    assert install.returncode == 0, install.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(*args: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run([venv / "bin" / "khib-build", *map(str, args)], cwd=tmp_path,
                              capture_output=True, text=True, env=env, check=False)

    where = subprocess.run([venv / "bin" / "python", "-c", "import libarchive, jinja2, "
                            "zstandard; print(libarchive.__file__, zstandard.__file__)"],
                           capture_output=True, text=True, env=env, check=True).stdout
    assert where.count("/usr/lib/python3/dist-packages/") == 2, where
    result = run("rootfs", "-o", "out")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "rootfs.gz").read_bytes() == default_image.read_bytes()
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "hello-1.0.tar.gz").write_bytes(make_tarball())
    sample = write_sample(tmp_path / "sample", ["http://127.0.0.1:9/hello-1.0.tar.gz"],
                          [mirror.as_uri()])
    result = run("rootfs", "-c", sample.config, "-o", "sample-out", "--no-cache",
                 "--dl-dir", tmp_path / "dl")
    assert result.returncode == 0, result.stderr[-3000:]
    listing = run("inspect", tmp_path / "sample-out" / "rootfs.gz")
    assert "usr/bin/hello" in listing.stdout
    assert run("pack", mirror, "-o", "mirror.cpio", "--compress", "zstd").returncode == 0
    assert "hello-1.0.tar.gz" in run("inspect", "mirror.cpio").stdout
    assert '"arch": "i386"' in run("show-info", "--json").stdout


def test_the_debian_package_builds_passes_lintian_and_builds_the_same_image(
        source_tree: Path, default_image: Path, tmp_path: Path) -> None:
    """debian/: dpkg-buildpackage with Debian's tools (pybuild), lintian without errors or
    warnings, and the .deb unpacked into a folder (never installed on the host) builds
    the default image to the checkout's bytes."""
    env = {"PATH": SYSTEM_PATH, "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "DEB_BUILD_OPTIONS": "nocheck"}
    build = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=source_tree,
                           env=env, capture_output=True, text=True, check=False)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    deb = source_tree.parent / "khib-build_0.1.0_all.deb"
    lintian = subprocess.run(["lintian", "--allow-root", "--display-level", ">=warning",
                              deb], env=env, capture_output=True, text=True, check=False)
    assert lintian.returncode == 0 and lintian.stdout == "", lintian.stdout + lintian.stderr
    fields = subprocess.run(["dpkg-deb", "-f", deb, "Depends"], capture_output=True,
                            text=True, check=True).stdout
    assert "python3-libarchive-c" in fields and "python3-jinja2" in fields, fields
    root = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
    assert (root / "usr/share/man/man1/khib-build.1.gz").is_file()
    completion = root / "usr/share/bash-completion/completions/khib-build"
    assert "_khib_build" in completion.read_text()
    run_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run_env |= {"PATH": SYSTEM_PATH,
                "PYTHONPATH": str(root / "usr/lib/python3/dist-packages")}
    result = subprocess.run([root / "usr/bin/khib-build", "rootfs", "-o", "out"], cwd=tmp_path,
                            env=run_env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "out" / "rootfs.gz").read_bytes() == default_image.read_bytes()
