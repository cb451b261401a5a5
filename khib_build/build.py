"""Build one package: fetch, extract, patch, build and install into its own staging tree.

Each step runs in a controlled environment (C locale, UTC, ``SOURCE_DATE_EPOCH``, umask
022, no make job server inherited from a calling make) and appends to the package's log.
A failure names the package, the step and the log.  Results are cached under a hash of
every input that can change them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from khib_build import __version__
from khib_build.cache import Cache, restore
from khib_build.config import ImageConfig
from khib_build.errors import BuildError, FetchError, KhibError
from khib_build.extract import ExtractError, extract
from khib_build.fetch import Sources, fetch
from khib_build.recipes import Recipe, recipe_digest, render_command
from khib_build.report import say

CACHE_FORMAT = 1
DROPPED_ENV = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "GNUMAKEFLAGS",
               "CFLAGS", "CPPFLAGS", "LDFLAGS", "CC", "CROSS_COMPILE")


@dataclass(frozen=True)
class BuildSettings:
    """Everything a package build needs beyond its recipe."""

    config: ImageConfig
    outdir: Path
    sources: Sources
    cache: Cache
    jobs: int
    epoch: int


@dataclass(frozen=True)
class PackageResult:
    recipe: Recipe
    key: str
    status: str  # "built" or "cached"
    staging: Path
    seconds: float


def toolchain_identity(config: ImageConfig) -> dict[str, object]:
    """What of the compiler can change a build's output: command, version, flags, libc."""
    tc = config.toolchain
    try:
        version = subprocess.run([*tc.cc, "--version"], capture_output=True, text=True,
                                 check=True).stdout
        libc = subprocess.run([*tc.cc, "-print-file-name=libc.a"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise KhibError(f"toolchain {shlex.join(tc.cc)} does not run: {exc}") from None
    libc_path = Path(libc)
    libc_hash = hashlib.sha256(libc_path.read_bytes()).hexdigest() if libc_path.is_file() else ""
    return {"cc": [shutil.which(tc.cc[0]) or tc.cc[0], *tc.cc[1:]], "version": version,
            "cflags": tc.cflags, "ldflags": tc.ldflags, "libc.a": libc_hash}


def package_key(recipe: Recipe, settings: BuildSettings, toolchain: dict[str, object],
                dependency_keys: list[str]) -> str:
    """The hash of every input of a package build."""
    inputs = {
        "format": CACHE_FORMAT,
        "recipe": recipe_digest(recipe),
        "source": recipe.source.sha256 if recipe.source else None,
        "arch": settings.config.arch,
        "toolchain": toolchain,
        "epoch": settings.epoch,
        "depends": dependency_keys,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def build_env(settings: BuildSettings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV and not k.startswith("LC_")}
    env.update(LC_ALL="C", LANG="C", TZ="UTC", SOURCE_DATE_EPOCH=str(settings.epoch))
    return env


def variables(recipe: Recipe, settings: BuildSettings, srcdir: Path, destdir: Path
              ) -> dict[str, object]:
    """The values of the documented build variables for one package."""
    tc = settings.config.toolchain
    prefix_map = f"-ffile-prefix-map={srcdir}=/usr/src/{recipe.name}-{recipe.version}"
    return {
        "name": recipe.name,
        "version": recipe.version,
        "arch": settings.config.arch,
        "target": settings.config.target.triplet,
        "cc": shlex.join(tc.cc),
        "cflags": " ".join([*tc.cflags, prefix_map]),
        "ldflags": " ".join(tc.ldflags),
        "jobs": settings.jobs,
        "srcdir": str(srcdir),
        "destdir": str(destdir),
        "files": str(recipe.folder / "files"),
        "source_date_epoch": settings.epoch,
    }


def build_package(recipe: Recipe, settings: BuildSettings, key: str) -> PackageResult:
    """Restore the package from the cache, or build it and store it there."""
    started = time.monotonic()
    staging = settings.outdir / "staging" / recipe.name
    cached = settings.cache.lookup(recipe.name, key)
    if cached is not None:
        restore(cached, staging)
        say(f"{recipe.name} {recipe.version}: cached")
        return PackageResult(recipe, key, "cached", staging, time.monotonic() - started)
    say(f"{recipe.name} {recipe.version}: building")
    Builder(recipe, settings, staging).run()
    say(f"{recipe.name} {recipe.version}: storing in the build cache")
    settings.cache.store(recipe.name, key, staging, {"name": recipe.name, "version":
                                                      recipe.version, "key": key})
    seconds = time.monotonic() - started
    say(f"{recipe.name} {recipe.version}: built in {seconds:.1f} s")
    return PackageResult(recipe, key, "built", staging, seconds)


class Builder:
    """The steps of one package build, each logged to ``<out>/logs/<name>.log``."""

    def __init__(self, recipe: Recipe, settings: BuildSettings, staging: Path) -> None:
        self.recipe, self.settings, self.staging = recipe, settings, staging
        self.workdir = settings.outdir / "build" / recipe.name
        self.log = settings.outdir / "logs" / f"{recipe.name}.log"
        self.env = build_env(settings)

    def run(self) -> None:
        for path in (self.workdir, self.staging):
            if path.exists():
                shutil.rmtree(path)
            path.mkdir(parents=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.write_text(f"khib-build {__version__}: {self.recipe.name} "
                            f"{self.recipe.version}\n")
        srcdir = self.unpack()
        for patch in self.recipe.patches:
            command = f"patch -p1 --forward --batch -i {shlex.quote(str(patch))}"
            self.shell(f"patch {patch.name}", command, srcdir)
        values = variables(self.recipe, self.settings, srcdir, self.staging)
        for step in ("build", "install"):
            commands = getattr(self.recipe, step)
            for index in range(len(commands)):
                command = render_command(self.recipe, step, index, values)
                self.shell(f"{step} {index + 1}/{len(commands)}", command, srcdir)

    def unpack(self) -> Path:
        """The source tree: the fetched tarball unpacked, or the recipe's own src/."""
        source = self.recipe.source
        if source is None:
            own = self.recipe.folder / "src"
            dest = self.workdir / "src"
            if own.is_dir():
                shutil.copytree(own, dest, symlinks=True)
            else:
                dest.mkdir()
            return dest
        try:
            archive = fetch(source, self.settings.sources)
            say(f"{self.recipe.name} {self.recipe.version}: unpacking {archive.name}")
            return extract(archive, self.workdir, self.recipe.max_expansion)
        except (FetchError, ExtractError) as exc:
            raise type(exc)(f"package {self.recipe.name}: {exc}") from None

    def shell(self, step: str, command: str, cwd: Path) -> None:
        with self.log.open("a") as log:
            log.write(f"\n=== {step}: {command}\n")
            log.flush()
            status = run_group(["/bin/sh", "-e", "-c", command], cwd, self.env, log)
        if status != 0:
            raise BuildError(self.recipe.name, step, self.log, tail(self.log))


def run_group(argv: list[str], cwd: Path, env: dict[str, str], log: TextIO) -> int:
    """Run a step in a process group of its own; if khib-build is interrupted or fails
    meanwhile, the whole group (make, its compilers) is killed, not left running."""
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                               stderr=subprocess.STDOUT, umask=0o022, start_new_session=True)
    try:
        return process.wait()
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise


def tail(path: Path, lines: int = 15) -> str:
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - 8192))
        text = handle.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])
