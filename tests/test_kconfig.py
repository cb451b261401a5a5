"""The kernel config: requests that do not land are found and explained, --resolve fixes
them, and kconfiglib reads the tree exactly as the kernel's own tools do."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from khib_build.engine.cache import Cache
from khib_build.kernel.build import KernelSource, kconfig_tools, kernel_source
from khib_build.kernel.explain import KernelKconfig, kconfig_env
from khib_build.kernel.kconfig import fragment_requests, read_config
from khib_build.pipeline import sources_for
from khib_build.settings.config import load_config
from tests.helpers import DEFAULT_CONFIG, assert_ok, khib, run_options

pytestmark = pytest.mark.slow
KERNEL_TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
FRAGMENT = ["RELOCATABLE", "KEXEC", "CRASH_DUMP", "PM", "PM_SLEEP", "KEXEC_JUMP",
            "PROC_VMCORE", "BLK_DEV_INITRD"]


def kconfig(tmp_path: Path, arch: str, *extra: object) -> tuple[int, str, Path]:
    fragment = tmp_path / "jump.config"
    fragment.write_text("".join(f"CONFIG_{s}=y\n" for s in FRAGMENT))
    result = khib("kconfig", "--kernel-src", KERNEL_TARBALL, "--arch", arch, "--base",
                  "tinyconfig", "--fragment", fragment, "-o", tmp_path, *extra)
    assert "Traceback" not in result.stderr
    return result.returncode, result.stdout, tmp_path / f"kconfig-{arch}"


@pytest.fixture(scope="module")
def tinyconfig(tmp_path_factory: pytest.TempPathFactory
               ) -> Callable[[str], tuple[int, str, Path]]:
    """``kconfig`` on tinyconfig with the fragment alone, run once per arch for the module."""
    runs: dict[str, tuple[int, str, Path]] = {}

    def run(arch: str) -> tuple[int, str, Path]:
        if arch not in runs:
            runs[arch] = kconfig(tmp_path_factory.mktemp(f"tinyconfig-{arch}"), arch)
        return runs[arch]
    return run


@pytest.fixture(scope="module")
def source() -> KernelSource:
    """The kernel tarball, unpacked in the user's build cache."""
    config, cache = load_config(DEFAULT_CONFIG), Cache(run_options().cache_dir.resolve())
    return kernel_source(KERNEL_TARBALL, config, cache, sources_for(config, run_options(), cache))


def reported(stdout: str) -> dict[str, str]:
    """Each not-landed symbol with its reason."""
    found = {}
    for line in stdout.splitlines():
        if ": not landed (asked by jump.config): " in line:
            head, reason = line.split(": not landed (asked by jump.config): ")
            found[head.removesuffix("=y")] = reason
    return found


def test_i386_tinyconfig_loses_four_requests_and_resolve_brings_them_back(
        tinyconfig: Callable[[str], tuple[int, str, Path]], tmp_path: Path) -> None:
    status, stdout, work = tinyconfig("i386")
    assert status == 1
    reasons = reported(stdout)
    assert set(reasons) == {"CRASH_DUMP", "PROC_VMCORE", "PM_SLEEP", "KEXEC_JUMP"}
    assert reasons["CRASH_DUMP"].startswith("needs X86_64 || (X86_32 && HIGHMEM)")
    assert "HIGHMEM4G is off" in reasons["CRASH_DUMP"]
    assert reasons["PROC_VMCORE"].startswith("needs PROC_FS && CRASH_DUMP")
    assert "has no prompt, so a fragment line cannot set it" in reasons["PM_SLEEP"]
    assert reasons["KEXEC_JUMP"].startswith(
        "needs KEXEC && HIBERNATION (HIBERNATION=n); HIBERNATION needs SWAP")
    assert "SWAP needs MMU && BLOCK && !ARCH_NO_SWAP (BLOCK=n)" in reasons["KEXEC_JUMP"]
    # The kernel's own tools agree on what was lost.
    merged = read_config(work / "merged" / ".config")
    assert {s for s in FRAGMENT if merged.get(s, "n") != "y"} == set(reasons)

    status, stdout, work = kconfig(tmp_path, "i386", "--resolve")
    assert status == 0, stdout
    proposal = read_config(work / "resolved.config")
    assert proposal == {s: "y" for s in ("HIGHMEM4G", "BLOCK", "SWAP", "HIBERNATION",
                                         "PROC_FS")}
    resolved = read_config(work / "resolved" / ".config")
    assert all(resolved.get(s) == "y" for s in FRAGMENT)
    assert resolved.get("NOHIGHMEM", "n") == "n"


def test_x86_64_tinyconfig_loses_another_set(
        tinyconfig: Callable[[str], tuple[int, str, Path]], tmp_path: Path) -> None:
    status, stdout, work = tinyconfig("x86_64")
    assert status == 1
    merged = read_config(work / "merged" / ".config")
    lost = {s for s in FRAGMENT if merged.get(s, "n") != "y"}
    assert set(reported(stdout)) == lost
    assert "CRASH_DUMP" not in lost and merged.get("PROC_FS", "n") == "n"
    assert "PROC_VMCORE" in lost
    status, stdout, work = kconfig(tmp_path, "x86_64", "--resolve")
    assert status == 0, stdout
    resolved = read_config(work / "resolved" / ".config")
    assert all(resolved.get(s) == "y" for s in FRAGMENT)
    assert "PROC_FS" in read_config(work / "resolved.config")


@pytest.mark.parametrize("arch", ["i386", "x86_64"])
def test_kconfiglib_reads_the_tree_as_the_kernel_tools_do(
        arch: str, tinyconfig: Callable[[str], tuple[int, str, Path]], source: KernelSource,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every symbol kconfiglib computes from base + fragment equals what merge_config.sh
    and olddefconfig wrote."""
    _, _, work = tinyconfig(arch)
    for name, value in kconfig_env(source.tree, arch).items():
        monkeypatch.setenv(name, value)
    tree = KernelKconfig(source.tree, arch)
    requests = fragment_requests([work / "fragment.config"])
    tree.load(work / "merged" / "base.config", {s: r.value for s, r in requests.items()})
    tree.kconf.write_config(str(tmp_path / "kconfiglib.config"))
    ours = read_config(tmp_path / "kconfiglib.config")
    theirs = read_config(work / "merged" / ".config")
    assert len(theirs) > 500
    differing = {s for s in ours.keys() | theirs.keys() if ours.get(s, "n") != theirs.get(s, "n")}
    assert differing == set()


def test_the_image_fragment_lands_on_tinyconfig_for_both_arches(source: KernelSource,
                                                                tmp_path: Path) -> None:
    """... and the tree's config programs, compiled by the first run, serve the second."""
    tools = kconfig_tools(source, Cache(run_options().cache_dir.resolve()))
    assert tools is not None
    shutil.rmtree(tools, ignore_errors=True)
    compiled = []
    for arch in ("i386", "x86_64"):
        result = khib("kconfig", "-c", DEFAULT_CONFIG, "--arch", arch, "-o", tmp_path)
        assert_ok(result)
        assert "requested symbols landed (tinyconfig, " + arch in result.stdout
        log = (tmp_path / f"kconfig-{arch}" / "kconfig.log").read_text()
        compiled.append("HOSTCC  scripts/kconfig/conf.o" in log)
    assert compiled == [True, False]
    assert (tools / "kconfig" / "conf").is_file()


def test_rootfs_writes_the_fragment_with_who_asked(default_image: Path) -> None:
    fragment = (default_image.parent / "kernel.config").read_text().splitlines()
    pairs = dict(zip(fragment[2::2], fragment[1::2], strict=False))
    assert pairs["CONFIG_KEXEC=y"] == "# recipe kexec-tools, recipe khib-tools"
    assert pairs["CONFIG_DEVTMPFS=y"] == "# recipe linux, recipe busybox"
    assert pairs["CONFIG_X86_32=y"] == "# arch i386"
    assert pairs["CONFIG_KEXEC_JUMP=y"] == "# recipe khib-tools, image khib"
    assert pairs["CONFIG_STRICT_DEVMEM=n"] == "# recipe khib-core, recipe khib-tools"
    assert pairs["CONFIG_RD_GZIP=y"] == "# compression gzip"
