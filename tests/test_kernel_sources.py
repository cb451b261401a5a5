"""The kernel's source pinned in the image config (a Debian package of any suite, or a
URL), and the patches a kernel gets by its role and its release."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from khib_build.engine import kinds
from khib_build.engine.keys import kernel_inputs
from khib_build.errors import ConfigError
from khib_build.fsutil import sha256_of
from khib_build.kernel.patches import kernel_patches, release_series
from khib_build.reports.legal import write_package
from khib_build.reports.sbom import Component
from khib_build.settings.config import load_config
from khib_build.settings.pins import KernelPin
from khib_build.settings.recipes import load_recipe
from khib_build.sources.fetch import Sources, debian_like
from khib_build.sources.kernelpin import pinned_tarball
from tests.helpers import assert_ok, khib

# Checked against the archive: linux-source-6.12 6.12.117-1 in trixie, and the tarball
# it carries.
TRIXIE_DEB = {"deb": "linux-source-6.12", "suite": "trixie", "version": "6.12.117-1",
              "sha256": "9141325315c7f1eca682113d185a8c77c82814aa6e32f7e127e61d6106403835"}
TRIXIE_TARBALL = "3b8ee8eaec6ff5e1661343ff73ac04ce59d020f552f29543c02f571960d75345"
SID_DEB = {"deb": "linux-source-7.2", "suite": "sid", "version": "7.2.13-1",
           "sha256": "30a8c5fc63f9028a62e6d7b3f7f43bee67425dbce2a05fceba83f9b87c92083d"}


def patch_text(name: str, line: str) -> str:
    """A patch adding ``line`` to the empty file ``name``."""
    return (f"--- a/{name}\n+++ b/{name}\n@@ -0,0 +1 @@\n+{line}\n")


def fake_linux_recipe(root: Path) -> Path:
    """A linux recipe with backports for 6.1 and 6.12 and one patch of its own, each
    touching its own file of the fake tree; its recipe dir."""
    folder = root / "recipes" / "linux"
    patches = {"patches/6.1/0001-backport-for-6.1.patch": patch_text("backport-6.1", "6.1"),
               "patches/6.12/0001-backport-for-6.12.patch": patch_text("backport-6.12", "6.12"),
               "patches/0001-khib-fix.patch": patch_text("khib-fix", "khib")}
    for rel, text in patches.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    (folder / "recipe.yaml").write_text(
        'name: linux\nversion: "6.1"\nkind: kernel\nlicense: GPL-2.0-only\n'
        "license_files: [COPYING]\n"
        "backports:\n"
        "  6.1: [patches/6.1/0001-backport-for-6.1.patch]\n"
        "  6.12: [patches/6.12/0001-backport-for-6.12.patch]\n"
        "patches: [patches/0001-khib-fix.patch]\n")
    return folder.parent


def fake_tree_files(version: str, patchlevel: str) -> dict[str, bytes]:
    """A kernel tree as small as khib-build takes one: a Makefile that names its release
    (and fails any target), a Kconfig, a license, and the empty files the patches touch."""
    files = {"Makefile": (f"VERSION = {version}\nPATCHLEVEL = {patchlevel}\nSUBLEVEL = 0\n"
                          "%:\n\t@echo 'a fake kernel tree: no $@ here'; exit 1\n").encode(),
             "Kconfig": b"# empty\n", "COPYING": b"GPL-2.0\n"}
    return files | {name: b"" for name in ("backport-6.1", "backport-6.12", "khib-fix")}


def fake_tree(root: Path, version: str, patchlevel: str) -> Path:
    tree = root / "tree"
    for name, data in fake_tree_files(version, patchlevel).items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(data)
    return tree


def fake_source_deb(root: Path, deb: str, version: str) -> Path:
    """A Debian package (Architecture: all) carrying usr/src/<deb>.tar.xz, a fake 6.1
    tree, as linux-source packages carry theirs."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for name, data in fake_tree_files("6", "1").items():
            info = tarfile.TarInfo(f"{deb}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    package = root / "deb-root"
    (package / "usr" / "src").mkdir(parents=True)
    (package / "usr" / "src" / f"{deb}.tar.xz").write_bytes(buffer.getvalue())
    (package / "DEBIAN").mkdir()
    (package / "DEBIAN" / "control").write_text(
        f"Package: {deb}\nVersion: {version}\nArchitecture: all\nMaintainer: t <t@t>\n"
        "Description: a fake kernel source\n")
    out = root / f"{deb}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(package), str(out)],
                   check=True, capture_output=True)
    return out


def write_config(root: Path, body: str, name: str = "image.yaml") -> Path:
    config = root / name
    config.write_text("include: khib.yaml\n" + body)
    return config


def first_error(stderr: str) -> str:
    return next(line for line in stderr.splitlines() if line.startswith("khib-build: error:"))


PIN = ("kernel_source:\n  deb: linux-source-7.2\n  suite: sid\n  version: 7.2.13-1\n"
       "  sha256: " + SID_DEB["sha256"] + "\n")


@pytest.mark.parametrize(("body", "line", "message"), [
    (PIN.replace("  version: 7.2.13-1\n", ""), 3,
     "deb linux-source-7.2: missing key 'version'"),
    (PIN.replace("  suite: sid\n", ""), 3, "deb linux-source-7.2: missing key 'suite'"),
    (PIN.replace("  sha256: " + SID_DEB["sha256"] + "\n", ""), 3, "missing key 'sha256'"),
    (PIN.replace(SID_DEB["sha256"], SID_DEB["sha256"][:-2]), 6,
     "sha256: expected a sha256 of 64 lower-case hex digits"),
    (PIN + "  url: https://example.org/linux.tar.xz\n", 7,
     "give deb (a Debian package carrying the tarball) or url (the tarball), not both"),
    (PIN + "  arch: all\n", 7, "unknown key 'arch'"),
    ("kernel_source:\n  url: https://example.org/linux.tar.xz\n  version: 1-1\n"
     "  sha256: " + SID_DEB["sha256"] + "\n", 4, "version is for deb, not url"),
    ("kernel_source:\n  sha256: " + SID_DEB["sha256"] + "\n", 3,
     "a pinned kernel source names deb"),
    ("kernel_role: c\n", 2, "expected one of b, a, got 'c'"),
])
def test_bad_kernel_source_names_the_file_and_line(tmp_path: Path, body: str, line: int,
                                                   message: str) -> None:
    config = write_config(tmp_path, body)
    result = khib("kernel", "-c", config, "-o", tmp_path / "out", "--dl-dir", tmp_path / "dl",
                  "--cache-dir", tmp_path / "cache", "--offline")
    assert result.returncode == 2, result.stderr
    key = body.split(":", 1)[0]  # every value error names its key first
    assert first_error(result.stderr).startswith(
        f"khib-build: error: {config}:{line}: {key}: {message}")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "dl").exists()  # nothing fetched


@pytest.mark.parametrize(("series", "problem"), [
    ("6", "expected a kernel release series, e.g. 6.12, got '6'"),
    ("6.1", "does not exist"),
])
def test_bad_backports_name_the_recipe_and_line(tmp_path: Path, series: str,
                                                problem: str) -> None:
    recipes = fake_linux_recipe(tmp_path)
    recipe = recipes / "linux" / "recipe.yaml"
    text = recipe.read_text().replace("  6.1:", f"  {series}:")
    if series == "6.1":
        text = text.replace("patches/6.1/0001-backport-for-6.1.patch", "patches/missing.patch")
    recipe.write_text(text)
    config = write_config(tmp_path, f"recipe_dirs: [{recipes}]\n")
    result = khib("kernel", "-c", config, "-o", tmp_path / "out", "--kernel-src",
                  fake_tree(tmp_path, "6", "1"))
    assert result.returncode == 2, result.stderr
    assert first_error(result.stderr).startswith(f"khib-build: error: {recipe}:")
    assert problem in result.stderr and "Traceback" not in result.stderr


def test_backports_are_for_the_kernel_recipe_only(tmp_path: Path) -> None:
    recipe = tmp_path / "recipes" / "hello" / "recipe.yaml"
    recipe.parent.mkdir(parents=True)
    (recipe.parent / "0001-x.patch").write_text(patch_text("x", "x"))
    recipe.write_text("name: hello\nversion: '1'\nlicense: MIT\nbackports:\n"
                      "  '6.1': [0001-x.patch]\n")
    with pytest.raises(ConfigError, match=r"recipe.yaml:4: backports is for kind kernel, "
                       "not commands"):
        kinds.check(load_recipe(recipe))


def test_a_wrong_sha256_names_the_package_and_file(tmp_path: Path) -> None:
    """A .deb of the wrong bytes on a mirror, and a tarball of the wrong bytes at its
    URL: exit 1, the first line naming the package and the file."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    deb_name = "linux-source-7.2_7.2.13-1_all.deb"
    (mirror / deb_name).write_bytes(b"not the package")
    (mirror / "linux-7.2.tar.xz").write_bytes(b"not the tarball")
    pinned_deb = write_config(tmp_path, PIN + f"mirrors: [{mirror.as_uri()}]\n", "deb.yaml")
    pinned_url = write_config(tmp_path, "kernel_source:\n  url: "
                              f"{(mirror / 'linux-7.2.tar.xz').as_uri()}\n  sha256: "
                              f"{SID_DEB['sha256']}\n", "url.yaml")
    for config, file, offline in ((pinned_deb, deb_name, ["--offline"]),  # (no apt)
                                  (pinned_url, "linux-7.2.tar.xz", [])):
        result = khib("kernel", "-c", config, "-o", tmp_path / "out", *offline,
                      "--dl-dir", tmp_path / "dl", "--cache-dir", tmp_path / "cache")
        assert result.returncode == 1, result.stderr
        assert first_error(result.stderr) == (
            f"khib-build: error: package linux: cannot obtain {file}: "
            f"{(mirror / file).as_uri()}: wrong sha256, rejected")
        assert "Traceback" not in result.stderr
        assert not (tmp_path / "dl" / file).exists()


def test_a_pinned_deb_is_fetched_taken_apart_once_and_patched_by_role(tmp_path: Path) -> None:
    """A Debian package from a file:// mirror, offline: verified into the download dir,
    its tarball taken out into the cache once and unpacked; kernel_role a gets the 6.1
    tree its 6.1 backport alone, role b the backport and then khib's patch. (The fake
    tree cannot be configured: the build stops there.)"""
    deb = fake_source_deb(tmp_path, "linux-source-6.1", "6.1.999-1")
    recipes = fake_linux_recipe(tmp_path)
    dl, cache = tmp_path / "dl", tmp_path / "cache"
    pin = (f"kernel_source:\n  deb: linux-source-6.1\n  suite: bookworm\n"
           f"  version: 6.1.999-1\n  sha256: {sha256_of(deb)}\n")
    runs = {}
    for role in ("a", "b"):
        config = write_config(tmp_path, f"recipe_dirs: [{recipes}]\nmirrors: "
                              f"[{tmp_path.as_uri()}]\nkernel_role: {role}\n" + pin)
        runs[role] = khib("kernel", "-c", config, "-o", tmp_path / f"out-{role}", "--offline",
                          "--dl-dir", dl, "--cache-dir", cache)
        assert runs[role].returncode == 1
        assert "kernel: make tinyconfig failed" in first_error(runs[role].stderr)
    first, second = runs["a"].stderr, runs["b"].stderr
    assert f"verified, from {deb.as_uri()}" in first
    assert sha256_of(dl / deb.name) == sha256_of(deb)
    assert "kernel: taking usr/src/linux-source-6.1.tar.xz out of " \
        "linux-source-6.1_6.1.999-1_all.deb" in first
    assert "kernel: unpacking linux-source-6.1.tar.xz" in first
    assert not [line for line in second.splitlines()
                if line.startswith(("fetch ", "kernel: taking ", "kernel: unpacking "))]
    applied = {role: [line.split()[-1] for line in run.stderr.splitlines()
                      if line.startswith("kernel: applying ")] for role, run in runs.items()}
    assert applied == {"a": ["0001-backport-for-6.1.patch"],
                       "b": ["0001-backport-for-6.1.patch", "0001-khib-fix.patch"]}
    patched = tmp_path / "out-a" / "kernel-build" / "src"
    assert (patched / "backport-6.1").read_text() == "6.1\n"
    assert (patched / "khib-fix").read_text() == (patched / "backport-6.12").read_text() == ""


def test_a_missing_tarball_in_the_deb_names_the_config_line(tmp_path: Path) -> None:
    deb = fake_source_deb(tmp_path, "linux-source-6.1", "6.1.999-1")
    config = write_config(tmp_path, f"mirrors: [{tmp_path.as_uri()}]\nkernel_source:\n"
                          "  deb: linux-source-6.1\n  suite: bookworm\n  version: 6.1.999-1\n"
                          f"  file: usr/src/linux.tar.xz\n  sha256: {sha256_of(deb)}\n")
    result = khib("kernel", "-c", config, "-o", tmp_path / "out", "--offline",
                  "--dl-dir", tmp_path / "dl", "--cache-dir", tmp_path / "cache")
    assert result.returncode == 2
    assert first_error(result.stderr) == (
        f"khib-build: error: {config}:7: {deb.name} has no file usr/src/linux.tar.xz")
    assert not list((tmp_path / "cache" / "kernel-src").glob("*.tar.xz"))  # nothing half-made


def test_the_patches_a_kernel_gets_by_role_and_release(tmp_path: Path) -> None:
    linux = load_recipe(fake_linux_recipe(tmp_path) / "linux" / "recipe.yaml")
    folder = linux.folder / "patches"
    backport_61 = folder / "6.1" / "0001-backport-for-6.1.patch"
    backport_612 = folder / "6.12" / "0001-backport-for-6.12.patch"
    own = folder / "0001-khib-fix.patch"
    assert release_series(fake_tree(tmp_path, "6", "1")) == "6.1"
    assert kernel_patches(linux, "6.1", "a") == (backport_61,)
    assert kernel_patches(linux, "6.1", "b") == (backport_61, own)
    assert kernel_patches(linux, "6.12", "b") == (backport_612, own)
    assert kernel_patches(linux, "7.2", "a") == ()

    def key(role: str) -> dict[str, str]:
        return kernel_inputs("sha", role, kernel_patches(linux, "6.1", role), ["X=y"],
                             "tinyconfig", "i386", 0)

    assert {k: v for k, v in key("a").items() if k.startswith(("patch", "kernel role"))} == {
        "kernel role": "a", "patch 1 0001-backport-for-6.1.patch": sha256_of(backport_61)}
    before = key("b")
    assert before != key("a")
    backport_612.write_text(patch_text("backport-6.12", "changed"))  # another release's
    assert key("b") == before
    own.write_text(patch_text("khib-fix", "changed"))  # one this kernel gets
    assert key("b") != before


def test_lint_takes_backports_as_listed(tmp_path: Path) -> None:
    recipes = fake_linux_recipe(tmp_path)
    (recipes / "linux" / "patches" / "6.1" / "0002-forgotten.patch").write_text(
        patch_text("x", "x"))
    result = khib("lint", "--json", recipes / "linux")
    unused = [f["message"] for f in yaml.safe_load(result.stdout)["findings"]
              if f["check"] == "unused"]
    assert unused == ["6.1/0002-forgotten.patch is in patches/ but not listed in patches: "
                      "or backports:"]


def apt_state_of_host() -> dict[str, float]:
    """The host's apt configuration and lists, each file with its modification time."""
    found = {}
    for folder in (Path("/etc/apt"), Path("/var/lib/apt/lists")):
        for path in folder.rglob("*"):
            if path.is_file() and os.access(path, os.R_OK):
                found[str(path)] = path.stat().st_mtime
    return found


@pytest.mark.slow
@pytest.mark.skipif(not debian_like(), reason="a Debian suite's package needs a Debian host")
def test_a_debian_suites_kernel_source_is_fetched_then_found_offline(tmp_path: Path) -> None:
    """linux-source-6.12 from trixie, through a private apt configuration for that suite:
    verified into the download dir, its tarball taken out; offline, from the download dir
    alone. The host's apt configuration and lists are left alone."""
    config = write_config(tmp_path, yaml.safe_dump({"kernel_source": TRIXIE_DEB}))
    pin = load_config(config).kernel_source
    assert isinstance(pin, KernelPin)
    dl, cache = tmp_path / "dl", tmp_path / "cache"
    host = apt_state_of_host()

    def sources(offline: bool, apt_state: Path) -> Sources:
        return Sources(dl_dir=dl, mirrors=(), offline=offline, apt_state=apt_state,
                       deadline=600, retries=1)

    tarball = pinned_tarball(pin, sources(False, cache / "apt-sources"), cache / "kernel-src")
    assert sorted(p.name for p in dl.iterdir()) == [".partial", pin.pinned().filename]
    assert sha256_of(dl / pin.pinned().filename) == TRIXIE_DEB["sha256"]
    assert tarball == cache / "kernel-src" / \
        f"{TRIXIE_DEB['sha256'][:24]}-linux-source-6.12.tar.xz" / "linux-source-6.12.tar.xz"
    assert sha256_of(tarball) == TRIXIE_TARBALL
    lines = (cache / "apt-sources" / "deb-amd64-trixie" / "sources.list").read_text()
    assert lines.startswith("deb [arch=amd64] ") and lines.rstrip().endswith(" trixie main")
    assert "security" not in lines
    assert apt_state_of_host() == host

    again = pinned_tarball(pin, sources(True, tmp_path / "none"), tmp_path / "unpacked")
    assert sha256_of(again) == TRIXIE_TARBALL
    assert not (tmp_path / "none").exists()  # apt was not run


def test_a_deb_pin_in_the_config_shows_in_show_info(tmp_path: Path) -> None:
    config = write_config(tmp_path, yaml.safe_dump({"kernel_source": SID_DEB,
                                                    "kernel_role": "a"}))
    result = khib("show-info", "--json", "-c", config)
    assert_ok(result)
    image = yaml.safe_load(result.stdout)["image"]
    assert image["kernel_source"] == {**SID_DEB, "file": None, "url": None}
    assert image["kernel_role"] == "a"


def test_lint_applies_the_backports_for_the_trees_release(tmp_path: Path) -> None:
    """The kernel recipe's role-b patches are tried on the image's kernel tree: its
    release's backports, then its own patches; a failing backport is named at its key."""
    recipes = fake_linux_recipe(tmp_path)
    config = write_config(tmp_path, f"recipe_dirs: [{recipes}]\nkernel_source: "
                          f"{fake_tree(tmp_path, '6', '1')}\n")

    def findings() -> list[dict[str, object]]:  # (a recipe of linux shadows the built-in)
        found = yaml.safe_load(khib("lint", "-c", config, "--json", "linux").stdout)
        return [f for f in found["findings"] if f["check"] != "shadows"]

    assert findings() == []
    (recipes / "linux" / "patches" / "6.1" / "0001-backport-for-6.1.patch").write_text(
        patch_text("no-such-file", "x").replace("@@ -0,0 +1 @@", "@@ -1 +1 @@\n-y"))
    broken = findings()
    assert [(f["check"], f["line"]) for f in broken] == [("patch", 6)]
    assert str(broken[0]["message"]).startswith("0001-backport-for-6.1.patch does not apply")


def test_legal_info_ships_same_named_patches_apart(tmp_path: Path) -> None:
    linux = Component("Kernel-linux", "kernel", "linux", "6.1.7", "GPL-2.0-only",
                      "pkg:generic/linux@6.1.7")
    first, second = tmp_path / "a" / "0001-fix.patch", tmp_path / "b" / "0001-fix.patch"
    for patch, text in ((first, "a"), (second, "b")):
        patch.parent.mkdir()
        patch.write_text(patch_text("f", text))
    write_package(tmp_path / "legal", linux, {}, [], (first, second))
    shipped = tmp_path / "legal" / "patches" / "linux"
    assert sorted(p.name for p in shipped.iterdir()) == ["01-0001-fix.patch",
                                                         "02-0001-fix.patch"]
    assert (shipped / "02-0001-fix.patch").read_text() == patch_text("f", "b")


def test_a_users_kernel_config_chooses_its_own_memory_model() -> None:
    """The A configs of the kernel matrix: their releases pinned, role a, and the image
    config may choose otherwise than the linux recipe alone asked (PAE's HIGHMEM64G, not
    khib's HIGHMEM4G), while two recipes that disagree still stop the build."""
    from khib_build.pipeline import plan_image

    matrix = Path(__file__).parent.parent / "configs" / "kernels"
    pae = plan_image(matrix / "a-6.12-i386.yaml")
    assert pae.config.kernel_role == "a"
    assert pae.config.kernel_source.deb == "linux-source-6.12"
    requests = pae.kernel_requests
    assert (requests["HIGHMEM4G"].value, requests["HIGHMEM4G"].askers) == ("n", ("image khib",))
    assert requests["HIGHMEM64G"].value == "y"
    latest = plan_image(matrix / "a-7.2-x86_64.yaml")
    assert {"RANDOMIZE_BASE", "RANDOMIZE_MEMORY", "SPARSEMEM_VMEMMAP"} <= set(
        latest.kernel_requests)
    assert latest.config.kernel_source.suite == "sid"
