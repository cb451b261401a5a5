"""Kernel config: the fragment an image needs, merged and checked against a real kernel tree.

The fragment gathers what each part asks for: the ``linux`` recipe (what any khib image
needs to boot and be tested), the architecture, every package recipe, the image config,
and the decompressor of the image's compression.  It is merged into a base config with
the kernel tree's own machinery (``make tinyconfig``/``defconfig``,
``scripts/kconfig/merge_config.sh``, ``make olddefconfig``), and the result is compared
with what was asked: ``olddefconfig`` drops an unmet request without a word (the
explain module says why).  Requests must agree, except that the image config may choose
otherwise than the ``linux`` recipe alone asked (a user's kernel with PAE instead of
khib's HIGHMEM4G, say).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from khib_build.errors import ConfigError, KhibError
from khib_build.fsutil import built_beside
from khib_build.settings.config import ARCHES, ImageConfig
from khib_build.settings.recipes import Recipe

RD_OPTIONS = {"gzip": "RD_GZIP", "xz": "RD_XZ", "zstd": "RD_ZSTD", "lz4": "RD_LZ4",
              "bzip2": "RD_BZIP2", "lzma": "RD_LZMA"}
ARCH_OPTIONS = {"i386": ("X86_32=y",), "x86_64": ("X86_64=y",)}
BASES = ("tinyconfig", "defconfig")


@dataclass(frozen=True)
class Request:
    """One symbol's requested value and who asked for it."""

    symbol: str
    value: str
    askers: tuple[str, ...]

    @property
    def line(self) -> str:
        return f"CONFIG_{self.symbol}={self.value}"


class KconfigError(KhibError):
    """The kernel tree's tools failed."""


def recipe_options(recipe: Recipe, arch: str) -> tuple[str, ...]:
    by_arch = {"i386": recipe.kernel_options_i386, "x86_64": recipe.kernel_options_x86_64}
    return (*recipe.kernel_options, *by_arch[arch])


def image_requests(config: ImageConfig, linux: Recipe, recipes: Sequence[Recipe],
                   arch: str | None = None) -> dict[str, Request]:
    """The image's fragment, in order: linux, arch, packages, image config, compression
    (for the config's arch, or another one)."""
    arch = arch or config.arch
    sources: list[tuple[str, Iterable[str]]] = [
        (f"recipe {linux.name}", recipe_options(linux, arch)),
        (f"arch {arch}", ARCH_OPTIONS[arch]),
        *((f"recipe {r.name}", recipe_options(r, arch)) for r in recipes),
        (f"image {config.name}", config.kernel_options),
    ]
    if config.compression in RD_OPTIONS:
        sources.append((f"compression {config.compression}",
                        (f"{RD_OPTIONS[config.compression]}=y",)))
    requests: dict[str, Request] = {}
    base, image = f"recipe {linux.name}", f"image {config.name}"
    for asker, options in sources:
        for option in options:
            symbol, value = option.split("=", 1)
            known = requests.get(symbol)
            if known is not None and known.value != value and known.askers == (base,) \
                    and asker == image:
                known = None  # the image config may choose otherwise than the linux recipe
            if known is not None and known.value != value:
                assert config.origin is not None
                raise ConfigError(config.origin.path, None,
                                  f"kernel option {symbol}: {', '.join(known.askers)} asks "
                                  f"for {known.value}, {asker} for {value}; make them agree")
            askers = (*known.askers, asker) if known else (asker,)
            requests[symbol] = Request(symbol, value, askers)
    return requests


def fragment_text(requests: dict[str, Request]) -> str:
    """A config fragment, each line under a comment naming who asked for it."""
    lines = ["# khib-build kernel config fragment: merge it into a base config"]
    for request in requests.values():
        lines += [f"# {', '.join(request.askers)}", request.line]
    return "\n".join(lines) + "\n"


def read_config(path: Path) -> dict[str, str]:
    """Symbol values of a .config or fragment; "# CONFIG_X is not set" reads as n."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if match := re.fullmatch(r"CONFIG_([A-Za-z0-9_]+)=(.*)", line.strip()):
            values[match[1]] = match[2]
        elif match := re.fullmatch(r"# CONFIG_([A-Za-z0-9_]+) is not set", line.strip()):
            values[match[1]] = "n"
    return values


def fragment_requests(paths: Sequence[Path]) -> dict[str, Request]:
    requests: dict[str, Request] = {}
    for path in paths:
        for symbol, value in read_config(path).items():
            requests[symbol] = Request(symbol, value, (path.name,))
    return requests


def not_landed(requests: dict[str, Request], actual: dict[str, str]) -> list[Request]:
    return [r for r in requests.values() if actual.get(r.symbol, "n") != r.value]


def kernel_version(src: Path) -> str:
    """VERSION.PATCHLEVEL.SUBLEVEL from the tree's Makefile."""
    fields = dict(re.findall(r"(?m)^(VERSION|PATCHLEVEL|SUBLEVEL) = (\d+)",
                             (src / "Makefile").read_text()))
    return f"{fields['VERSION']}.{fields['PATCHLEVEL']}.{fields.get('SUBLEVEL', '0')}"


def kernel_make(src: Path, build: Path, arch: str, targets: Sequence[str], log: TextIO,
                jobs: int = 1, env: dict[str, str] | None = None) -> None:
    """``make -C SRC O=BUILD ARCH=...`` with the output going to ``log``."""
    build.mkdir(parents=True, exist_ok=True)
    command = ["make", "-C", str(src), f"O={build}", f"ARCH={ARCHES[arch].kernel_arch}",
               f"-j{jobs}", *targets]
    run_logged(command, log, f"make {' '.join(targets)}", env)


def run_logged(command: list[str], log: TextIO, what: str,
               extra_env: dict[str, str] | None = None) -> None:
    log.write(f"\n=== {' '.join(command)}\n")
    log.flush()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    env.update(LC_ALL="C", TZ="UTC", **(extra_env or {}))
    status = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                            stdin=subprocess.DEVNULL, check=False).returncode
    if status != 0:
        raise KconfigError(f"kernel: {what} failed (exit {status}); log: {log.name}")


def merge(src: Path, build: Path, arch: str, base: str, fragments: Sequence[Path],
          log: TextIO, tools: Path | None = None) -> dict[str, str]:
    """The kernel tools' own merge of ``fragments`` into ``base``; the resulting values.

    ``tools`` keeps the tree's host programs (fixdep, conf) once built: copied into
    ``build`` with their times, make finds them up to date instead of compiling them."""
    config = build / ".config"
    if tools is not None and tools.is_dir():
        with contextlib.suppress(OSError):  # removed by a cache gc meanwhile: make builds them
            shutil.copytree(tools, build / "scripts", dirs_exist_ok=True)
    if base in BASES:
        kernel_make(src, build, arch, [base], log)
    else:
        build.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(base, config)
    if fragments:
        shutil.copyfile(config, build / "base.config")
        run_logged([str(src / "scripts" / "kconfig" / "merge_config.sh"), "-m", "-O",
                    str(build), str(build / "base.config"), *map(str, fragments)], log,
                   "merge_config.sh")
    kernel_make(src, build, arch, ["olddefconfig"], log)
    if tools is not None and not tools.is_dir():
        with built_beside(tools) as staging:
            shutil.copytree(build / "scripts", staging, dirs_exist_ok=True)
    return read_config(config)


