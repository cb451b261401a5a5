"""Build one package: fetch, extract, patch, build and install into its own staging tree.

Each step runs in a controlled environment (C locale, UTC, ``SOURCE_DATE_EPOCH``, umask
022, the run's own make job server, a compiler pointed at the package's sysroot), is
timed, and appends to the package's log.  A failure names the package, the step and the
log (:func:`keys.package_inputs` names everything that can change the output).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO, TypeVar

from khib_build import __version__, cancel, report
from khib_build.engine.cache import Cache
from khib_build.engine.jobserver import JobServer
from khib_build.engine.keys import build_triplet
from khib_build.engine.kinds import kind_of
from khib_build.engine.kinds.base import Place
from khib_build.engine.outdir import OutputDir
from khib_build.errors import BuildError, KhibError
from khib_build.fsutil import walk
from khib_build.settings.config import ImageConfig
from khib_build.settings.recipes import Recipe
from khib_build.sources.fetch import Sources

T = TypeVar("T")
ET_EXEC, ET_DYN = 2, 3
# Symbols and debug sections the loader does not need, and the compiler's .comment notes.
STRIP_FLAGS = ("--strip-unneeded", "--remove-section=.comment")
DROPPED_ENV = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "GNUMAKEFLAGS",
               "CFLAGS", "CPPFLAGS", "LDFLAGS", "CC", "CROSS_COMPILE")


@dataclass(frozen=True)
class BuildSettings:
    """Everything a package build needs beyond its recipe."""

    config: ImageConfig
    out: OutputDir
    sources: Sources
    cache: Cache
    jobs: int
    epoch: int


@dataclass(frozen=True)
class Step:
    name: str
    seconds: float


def build_env(settings: BuildSettings, sysroot: Path, jobserver: JobServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV and not k.startswith("LC_")}
    env.update(LC_ALL="C", LANG="C", TZ="UTC", SOURCE_DATE_EPOCH=str(settings.epoch),
               MAKEFLAGS=jobserver.makeflags, PKG_CONFIG_SYSROOT_DIR=str(sysroot),
               PKG_CONFIG_LIBDIR=f"{sysroot}/usr/lib/pkgconfig:{sysroot}/usr/share/pkgconfig")
    return env


def variables(recipe: Recipe, settings: BuildSettings, srcdir: Path, destdir: Path,
              sysroot: Path) -> dict[str, object]:
    """The values of the documented build variables for one package."""
    tc = settings.config.toolchain
    source_map = f"-ffile-prefix-map={srcdir}=/usr/src/{recipe.name}-{recipe.version}"
    return {
        "name": recipe.name,
        "version": recipe.version,
        "arch": settings.config.arch,
        "target": settings.config.target.triplet,
        "build_triplet": build_triplet(),
        "cc": shlex.join([*tc.cc, f"--sysroot={sysroot}"]),
        "cflags": " ".join([*tc.cflags, *recipe.cflags, source_map,
                            f"-ffile-prefix-map={sysroot}=/"]),
        "ldflags": " ".join([*tc.ldflags, *recipe.ldflags]),
        "jobs": settings.jobs,
        "srcdir": str(srcdir),
        "destdir": str(destdir),
        "sysroot": str(sysroot),
        "files": str(recipe.folder / "files"),
        "source_date_epoch": settings.epoch,
    }


class Builder:
    """The steps of one package build, each logged to ``<out>/logs/<name>.log`` and timed."""

    def __init__(self, recipe: Recipe, settings: BuildSettings, staging: Path, sysroot: Path,
                 jobserver: JobServer) -> None:
        self.recipe, self.settings, self.staging = recipe, settings, staging
        self.sysroot, self.jobserver = sysroot, jobserver
        self.workdir = settings.out.build_dir(recipe.name)
        self.log = settings.out.log(recipe.name)
        self.env = build_env(settings, sysroot, jobserver)
        self.steps: list[Step] = []

    def run(self) -> list[Step]:
        for path in (self.workdir, self.staging):
            if path.exists():
                shutil.rmtree(path)
            path.mkdir(parents=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.write_text(f"khib-build {__version__}: {self.recipe.name} "
                            f"{self.recipe.version}\n")
        kind = kind_of(self.recipe)
        place = Place(self.settings.sources, self.settings.config.arch, self.workdir,
                      self.staging, self.log)
        srcdir = self.timed(kind.tree_step, lambda: kind.tree(self.recipe, place))
        for patch in self.recipe.patches:
            command = f"patch -p1 --forward --batch -i {shlex.quote(str(patch))}"
            self.shell(f"patch {patch.name}", command, srcdir)
        values = variables(self.recipe, self.settings, srcdir, self.staging, self.sysroot)
        for step, action in kind.steps(self.recipe, values):
            if isinstance(action, str):
                self.shell(step, action, srcdir)
            else:
                self.action(step, action)
        if self.recipe.strip:
            found = elf_programs(self.staging)
            if found:
                self.shell(f"strip {len(found)} file(s)", shlex.join(
                    [*self.settings.config.toolchain.strip, *STRIP_FLAGS, *map(str, found)]),
                    srcdir)
        return self.steps

    def timed(self, name: str, action: Callable[[], T]) -> T:
        started = time.monotonic()
        result = action()
        self.steps.append(Step(name, time.monotonic() - started))
        return result

    def action(self, step: str, action: Callable[[], None]) -> None:
        """A step done in Python: its error is the step's failure."""
        report.step(self.recipe.name, self.recipe.version, step)
        try:
            self.timed(step, action)
        except KhibError as exc:
            raise BuildError(self.recipe.name, step, self.log, str(exc)) from None

    def shell(self, step: str, command: str, cwd: Path) -> None:
        report.step(self.recipe.name, self.recipe.version, step)
        report.detail(f"{self.recipe.name}: $ {command}")
        with self.log.open("a") as log:
            log.write(f"\n=== {step}: {command}\n")
            log.flush()
            status = self.timed(step, lambda: run_group(
                ["/bin/sh", "-e", "-c", command], cwd, self.env, log, self.jobserver))
        if status != 0:
            raise BuildError(self.recipe.name, step, self.log, tail(self.log))


def elf_programs(tree: Path) -> list[Path]:
    """The executables and shared libraries below ``tree`` (ELF files of type EXEC or
    DYN; objects and archives are left alone), in path order."""
    found = []
    for _, path, info in walk(tree):
        if stat.S_ISREG(info.st_mode):
            with path.open("rb") as handle:
                head = handle.read(18)
            if head[:4] == b"\x7fELF" and len(head) == 18:
                order = "little" if head[5] == 1 else "big"
                if int.from_bytes(head[16:18], order) in (ET_EXEC, ET_DYN):
                    found.append(path)
    return found


def run_group(argv: list[str], cwd: Path, env: dict[str, str], log: TextIO,
              jobserver: JobServer) -> int:
    """Run a step in a process group of its own, with the run's job server; if the run is
    cancelled or interrupted meanwhile, the whole group (make, its compilers) is killed."""
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                               stderr=subprocess.STDOUT, umask=0o022, start_new_session=True,
                               pass_fds=jobserver.fds)
    try:
        while True:
            try:
                return process.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                cancel.check()
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise


def tail(path: Path, lines: int = 15) -> str:
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - 8192))
        text = handle.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])
