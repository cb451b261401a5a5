"""The kernel: its source, the image's config checked against it, and a cached bzImage.

The source is a tree, a tarball, or a tarball the image config pins (see
:mod:`khib_build.sources.kernelpin`).  A tarball is unpacked once into
``<cache>/kernel-src/`` and shared; a build that must patch it works on a hard-linked
copy whose patched files are real copies, so the shared tree is never written to (see
:mod:`patches`).  The configuration is the image's fragment (see :mod:`kconfig`) merged
into the base with the tree's own tools; a request that does not land stops the build
with the reason.  The result (``bzImage`` and the full config) is cached under a hash of
the source, the kernel's role and the patches it gets, the fragment, the base, the
architecture and the compiler.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from khib_build.engine.cache import Cache
from khib_build.engine.keys import compiler_version, kernel_inputs, key_of
from khib_build.engine.outdir import OutputDir
from khib_build.errors import KhibError, UsageError
from khib_build.fsutil import (
    atomic_output,
    built_beside,
    exclusive,
    reason,
    sha256_of,
    tree_digest,
)
from khib_build.kernel.explain import check, report_check
from khib_build.kernel.kconfig import BASES, Request, kernel_make
from khib_build.kernel.patches import kernel_patches, patched_tree, release_series
from khib_build.report import say
from khib_build.settings.config import ImageConfig
from khib_build.settings.pins import KernelPin
from khib_build.settings.recipes import DEFAULT_EXPANSION, Recipe
from khib_build.sources.extract import extract
from khib_build.sources.fetch import Sources
from khib_build.sources.kernelpin import pinned_tarball

KERNEL_FILES = ("bzImage", "kernel.full.config")  # what a kernel build leaves in the output dir


@dataclass(frozen=True)
class KernelSource:
    tree: Path  # the unpacked source
    identity: str  # the tarball's sha256, or "tree " and a digest of the tree
    archive: Path | None  # the tarball it was unpacked from; None for a tree


def kernel_source(given: Path | None, config: ImageConfig, cache: Cache, sources: Sources
                  ) -> KernelSource:
    """The tree to build from: ``--kernel-src``, else the config's ``kernel_source`` (a
    pinned tarball is fetched from ``sources``; a tarball is unpacked once into the
    cache's kernel-src/, and held in use for the run)."""
    unpacked = cache.kernel_sources
    chosen = given or config.kernel_source
    if chosen is None:
        raise UsageError("no kernel source: give --kernel-src (a tarball such as "
                         "/usr/src/linux-source-6.1.tar.xz, or a tree) or set kernel_source "
                         "in the image config")
    if isinstance(chosen, KernelPin):
        path = pinned_tarball(chosen, sources, unpacked)
        if chosen.deb is not None:
            cache.use(path.parent)  # (taken out of the .deb into the cache)
    else:
        path = chosen
    if path.is_dir():
        if not (path / "Makefile").is_file() or not (path / "Kconfig").is_file():
            raise UsageError(f"{path} is not a kernel tree (no Makefile and Kconfig)")
        say(f"kernel: hashing the tree {path}")
        return KernelSource(path.resolve(), "tree " + tree_digest(path), None)
    if not path.is_file():
        raise UsageError(f"kernel source {path} does not exist")
    sha = sha256_of(path)
    final = unpacked / sha[:24]
    with exclusive(unpacked / f".{sha[:24]}.lock",
                   lambda: say("kernel: another run is unpacking the source; waiting")):
        if not final.is_dir():
            say(f"kernel: unpacking {path.name} (once; kept in {final.parent})")
            try:
                with built_beside(final) as staging:
                    extract(path, staging, DEFAULT_EXPANSION)
            except OSError as exc:
                raise KhibError(f"kernel: cannot unpack {path} into {final.parent}: "
                                f"{reason(exc)}") from None
    cache.use(final)
    tops = [p for p in final.iterdir() if p.is_dir()]
    tree = tops[0] if len(tops) == 1 else final
    return KernelSource(tree, sha, path)


def kconfig_tools(source: KernelSource, cache: Cache) -> Path | None:
    """Where a tarball's config programs (fixdep, conf), built by this host's gcc, are
    kept beside its unpacked tree (held in use for the run); None for a given tree."""
    if source.identity.startswith("tree "):
        return None
    host = key_of(compiler_version(["gcc"]))[:12]
    tools = cache.kernel_sources / f"{source.identity[:24]}-kconfig-tools-{host}"
    if tools.is_dir():
        cache.use(tools)
    return tools


def base_of(config: ImageConfig) -> str:
    """tinyconfig, defconfig, or the path of a base config file."""
    if config.kernel_base in BASES:
        return config.kernel_base
    assert config.origin is not None
    path = (config.origin.file("kernel_base").parent / config.kernel_base).resolve()
    if not path.is_file():
        raise config.origin.error("kernel_base", f"kernel_base {config.kernel_base}: no such "
                                  "file (tinyconfig, defconfig, or a config file)")
    return str(path)


@dataclass(frozen=True)
class KernelResult:
    bzimage: Path
    config: Path
    status: str  # "built" or "cached"
    seconds: float


def make_kernel(source: KernelSource, patches: tuple[Path, ...], requests: dict[str, Request],
                base: str, arch: str, state: OutputDir, jobs: int, epoch: int) -> str:
    """Configure and build the kernel into ``<kernel work>/result``; "built"."""
    work = state.kernel_work
    log_path = state.log("kernel")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        tree = patched_tree(source.tree, patches, work, log)
        say(f"kernel: configuring for {arch} ({Path(base).name} + the image's fragment)")
        result = check(tree, arch, base, requests, work / "config", log)
        if result.missing:
            raise KhibError("kernel config: requests did not land (khib-build kconfig "
                            "--resolve proposes what to add):\n" +
                            "\n".join(report_check(result)))
        build = work / "config" / "merged"
        say(f"kernel: building bzImage with -j{jobs} (log: {log_path})")
        kernel_make(tree, build, arch, ["bzImage"], log, jobs, kbuild_env(epoch))
    result_dir = work / "result"
    if result_dir.exists():
        shutil.rmtree(result_dir)
    result_dir.mkdir(parents=True)
    shutil.copyfile(build / "arch" / "x86" / "boot" / "bzImage",
                    result_dir / KERNEL_FILES[0])
    shutil.copyfile(build / ".config", result_dir / KERNEL_FILES[1])
    return "built"


def build_kernel(source: KernelSource, linux: Recipe, role: str, requests: dict[str, Request],
                 base: str, arch: str, outdir: Path, cache: Cache, jobs: int, epoch: int
                 ) -> KernelResult:
    """``outdir/bzImage`` and ``outdir/kernel.full.config``, from the cache or built."""
    started = time.monotonic()
    state = OutputDir(outdir)
    state.lock()
    base_identity = base if base in BASES else f"{Path(base).name} {sha256_of(Path(base))}"
    patches = kernel_patches(linux, release_series(source.tree), role)
    inputs = kernel_inputs(source.identity, role, patches,
                           [r.line for r in requests.values()], base_identity, arch, epoch)
    key = key_of(inputs)
    name = f"linux-{arch}"
    work = state.kernel_work
    with cache.building(name, key):  # one build of a key, whoever asks for it
        status = "cached" if cache.restore(name, key, work / "result") is not None else \
            make_kernel(source, patches, requests, base, arch, state, jobs, epoch)
        if status == "built":
            cache.store(name, key, work / "result", {"name": name, "key": key,
                                                      "inputs": inputs})
    for file in KERNEL_FILES:
        with (work / "result" / file).open("rb") as source, \
                atomic_output(state.file(file)) as out:
            shutil.copyfileobj(source, out)
    state.file("kernel.json").write_text(json.dumps({"key": key, "inputs": inputs},
                                                    indent=1, sort_keys=True) + "\n")
    return KernelResult(*(state.file(file) for file in KERNEL_FILES), status,
                        time.monotonic() - started)


def kbuild_env(epoch: int) -> dict[str, str]:
    """What makes a kernel build reproducible: no build time, user or host in it."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))
    return {"KBUILD_BUILD_TIMESTAMP": stamp, "KBUILD_BUILD_USER": "khib",
            "KBUILD_BUILD_HOST": "khib-build", "KBUILD_BUILD_VERSION": "1"}
