"""Every cache key khib-build computes, and the named inputs each one hashes.

A key is the SHA-256 of a mapping of named inputs, so that ``explain`` can say which
input changed. Packages, the image and the kernel each have their inputs here; the C
library's sysroot is keyed by the versions of its Debian packages.

A package's key holds the C library by content, and only the headers its last build
read (as ccache's direct mode does): its inputs without the C library make its *recipe
key*, under which the cache keeps the header sets its builds read; each set, with the
current content of those headers, gives a key to look for (:func:`package_key`).  A new
Debian revision of the C library that changes no header a package reads leaves that
package's key alone.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shlex
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from khib_build import __version__
from khib_build.errors import KhibError
from khib_build.fsutil import sha256_of, tree_digest
from khib_build.settings.config import ImageConfig
from khib_build.settings.recipes import Recipe, recipe_files

CACHE_FORMAT = 2
LIBC = "C library files"  # names, links, libraries: everything but the headers' content
HEADER = "C library header "


@dataclass(frozen=True)
class LibcFiles:
    """The content of a C library sysroot, as package keys use it."""

    headers: dict[str, str]  # usr/include/... -> sha256 (of a link: its target)
    rest: str  # one digest of every file's name and type and of everything not a header


def key_of(inputs: object) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def compiler_version(command: Sequence[str]) -> str:
    """The first line of a toolchain command's ``--version``."""
    try:
        return subprocess.run([*command, "--version"], capture_output=True, text=True,
                              check=True).stdout.splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError) as exc:
        raise KhibError(f"toolchain {shlex.join(command)} does not run: {exc}") from None


@functools.cache
def build_triplet() -> str:
    """The GNU triplet of the machine builds run on, as its gcc names it."""
    try:
        return subprocess.run(["gcc", "-dumpmachine"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise KhibError(f"the host's gcc does not run: {exc}") from None


def resolved(command: Sequence[str]) -> str:
    """A command line with its program's path as PATH finds it."""
    return shlex.join([shutil.which(command[0]) or command[0], *command[1:]])


def toolchain_inputs(config: ImageConfig) -> dict[str, str]:
    """What of the compiler can change a build's output: command, version, flags."""
    tc = config.toolchain
    return {
        "toolchain cc": resolved(tc.cc),
        "toolchain version": compiler_version(tc.cc),
        "toolchain cflags": shlex.join(tc.cflags),
        "toolchain ldflags": shlex.join(tc.ldflags),
        "build machine": build_triplet(),
        "toolchain strip": f"{resolved(tc.strip)}: {compiler_version(tc.strip)}",
    }


def package_key(base: Mapping[str, str], libc: LibcFiles, headers: Iterable[str]
                ) -> tuple[str, dict[str, str]]:
    """A package's key and inputs: its recipe key's inputs (``base``) with the C library
    as a build that read ``headers`` saw it: everything but the headers, and the content
    of those headers (a header since removed is "absent")."""
    inputs = {**base, LIBC: libc.rest}
    inputs |= {HEADER + h: libc.headers.get(h, "absent") for h in sorted(headers)}
    return key_of(inputs), inputs


def headers_read(inputs: Mapping[str, str]) -> list[str]:
    """The C library headers a package's inputs hold."""
    return sorted(name.removeprefix(HEADER) for name in inputs if name.startswith(HEADER))


def package_inputs(recipe: Recipe, arch: str, epoch: int, toolchain: dict[str, str],
                   dependency_outputs: dict[str, str]) -> dict[str, str]:
    """Every input of a package build but the C library (its recipe key's inputs), each
    named so a change can be explained."""
    inputs = {
        "khib-build cache format": str(CACHE_FORMAT),
        "arch": arch,
        "SOURCE_DATE_EPOCH": str(epoch),
        "source sha256": recipe.source.sha256 if recipe.source else "none (src/ folder)",
    }
    inputs |= {f"deb {deb.filename}": deb.sha256 for deb in recipe.debs.for_arch(arch)}
    inputs |= {f"recipe file {rel}": digest for rel, digest in recipe_files(recipe).items()}
    inputs |= {f"patch {patch}": sha256_of(patch) for patch in recipe.patches
               if not patch.is_relative_to(recipe.folder)}
    inputs |= toolchain
    inputs |= {f"dependency {name} output": digest for name, digest in
               sorted(dependency_outputs.items())}
    return inputs


def image_inputs(config: ImageConfig, recipes: Sequence[Recipe], outputs: Mapping[str, str],
                 tables: Iterable[tuple[str, Path | None]],
                 overlays: Iterable[tuple[str, str, int, str | None, bytes | None]],
                 closure_script: Path, epoch: int) -> dict[str, str]:
    """Everything the image's bytes are made of: the packing settings, each package's
    output, the tables (each entry and its source file) and the overlay items (path,
    kind, mode, link target, content)."""
    inputs = {
        "khib-build": __version__,
        "compression": f"{config.compression} {config.compression_level}",
        "SOURCE_DATE_EPOCH": str(epoch),
        "early segment": tree_digest(config.early_segment) if config.early_segment else "",
        "python modules": " ".join(sorted({m for r in recipes for m in r.python_modules})),
        "python closure": sha256_of(closure_script),
        "tables": key_of([(entry, source and sha256_of(source)) for entry, source in tables]),
    }
    inputs |= {f"package {name} output": output for name, output in outputs.items()}
    inputs |= {f"{stage} hook {script}": sha256_of(script) for stage, scripts in
               (("post_build", config.post_build), ("post_image", config.post_image))
               for script in scripts}
    if config.allow:
        inputs["allowed check failures"] = key_of([(a.path, a.reason) for a in config.allow])
    for path, kind, mode, target, content in overlays:
        inputs[f"overlay {path}"] = key_of(
            [kind, mode, target, hashlib.sha256(content or b"").hexdigest()])
    return inputs


def kernel_inputs(source_identity: str, role: str, patches: Sequence[Path],
                  request_lines: Sequence[str], base_identity: str, arch: str, epoch: int
                  ) -> dict[str, str]:
    """What the kernel is built from: its source, its role and the patches that gives it
    (their bytes, in order), the requests (not who asked for them), the base config."""
    inputs = {
        "khib-build cache format": str(CACHE_FORMAT),
        "kernel source": source_identity,
        "kernel role": role,
        "requests": hashlib.sha256("\n".join(request_lines).encode()).hexdigest(),
        "base": base_identity,
        "arch": arch,
        "compiler": compiler_version(["gcc"]),
        "SOURCE_DATE_EPOCH": str(epoch),
    }
    return inputs | {f"patch {number} {patch.name}": sha256_of(patch)
                     for number, patch in enumerate(patches, 1)}


def sysroot_key(versions: Mapping[str, str], kept: Sequence[str]) -> str:
    """The C library's sysroot: the versions of its Debian packages and what is kept."""
    identity = json.dumps({"packages": versions, "kept": kept}, sort_keys=True)
    return hashlib.sha256(identity.encode()).hexdigest()[:24]
