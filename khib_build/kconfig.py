"""Kernel config: the fragment an image needs, merged and checked against a real kernel tree.

The fragment gathers what each part asks for: the ``linux`` recipe (what any khib image
needs to boot and be tested), the architecture, every package recipe, the image config,
and the decompressor of the image's compression.  It is merged into a base config with
the kernel tree's own machinery (``make tinyconfig``/``defconfig``,
``scripts/kconfig/merge_config.sh``, ``make olddefconfig``), and the result is compared
with what was asked: ``olddefconfig`` drops an unmet request without a word.

Why a request did not land is read from the tree's Kconfig files with kconfiglib 14.1.
That version predates the bare ``modules`` keyword of 6.1's ``kernel/module/Kconfig``
(the older spelling is ``option modules``; kconfiglib treats the symbol MODULES as the
modules switch either way), so the files are read through :class:`KernelKconfig`,
which respells that one keyword and changes nothing else.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from khib_build.build import compiler_version
from khib_build.config import ARCHES, ImageConfig
from khib_build.errors import ConfigError, KhibError
from khib_build.recipes import Recipe

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
    for asker, options in sources:
        for option in options:
            symbol, value = option.split("=", 1)
            known = requests.get(symbol)
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
          log: TextIO) -> dict[str, str]:
    """The kernel tools' own merge of ``fragments`` into ``base``; the resulting values."""
    config = build / ".config"
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
    return read_config(config)


class KernelKconfig:
    """A kernel tree's Kconfig, read with kconfiglib, for explaining and resolving."""

    def __init__(self, src: Path, arch: str) -> None:
        import kconfiglib

        self.lib = kconfiglib
        version = compiler_version(["gcc"])
        os.environ.update(srctree=str(src), ARCH=ARCHES[arch].kernel_arch, SRCARCH="x86",
                          KERNELVERSION=kernel_version(src), CC="gcc", LD="ld",
                          HOSTCC="gcc", HOSTCXX="g++", CC_VERSION_TEXT=version)

        class Respelled(kconfiglib.Kconfig):  # type: ignore[misc]
            def _open(self, filename: str, mode: str) -> TextIO:
                handle: TextIO = super()._open(filename, mode)
                if mode != "r" or "Kconfig" not in os.path.basename(filename):
                    return handle
                with handle:
                    text = handle.read()
                return io.StringIO(re.sub(r"(?m)^(\s+)modules[ \t]*$", r"\1option modules",
                                          text))

        self.kconf = Respelled(str(src / "Kconfig"), warn=False)

    def position(self, expr: object) -> int:
        """Where the first symbol of ``expr`` is defined, in Kconfig order."""
        if not hasattr(self, "order"):
            self.order = {}
            for index, node in enumerate(self.kconf.node_iter()):
                if isinstance(node.item, self.lib.Symbol):
                    self.order.setdefault(node.item.name, index)
        names = [s.name for s in self.positive_symbols(expr)]
        return min((self.order.get(n, 1 << 30) for n in names), default=1 << 30)

    def load(self, config: Path, extra: dict[str, str] | None = None) -> None:
        self.kconf.load_config(str(config))
        for symbol, value in (extra or {}).items():
            if symbol in self.kconf.syms:
                self.kconf.syms[symbol].set_value(value)

    def value(self, symbol: str) -> str:
        sym = self.kconf.syms.get(symbol)
        return "n" if sym is None else sym.str_value or "n"

    def has_prompt(self, symbol: str) -> bool:
        return any(node.prompt for node in self.kconf.syms[symbol].nodes)

    def promptable(self, symbol: str) -> bool:
        """Whether a prompt can show: one whose condition is not fixed off (as 64BIT's
        ``if "$(ARCH)" = "x86"`` is when building for i386)."""
        return any(node.prompt and (self.lib.expr_value(node.prompt[1]) != 0
                                    or self.symbols_in(node.prompt[1]))
                   for node in self.kconf.syms[symbol].nodes)

    def why(self, symbol: str) -> str:
        """Why a symbol is not set as asked: its unmet dependencies, followed down, one
        clause per symbol ("needs A && B (B=n); B needs C (C=n); C is off: ...")."""
        clauses: list[str] = []
        pending, seen = [symbol], {symbol}
        while pending and len(clauses) < 12:
            name = pending.pop(0)
            sym = self.kconf.syms.get(name)
            subject = "" if name == symbol else f"{name} "
            if sym is None or not sym.nodes:
                clauses.append(f"{subject}does not exist in this kernel")
                continue
            unmet_deps = self.lib.expr_value(sym.direct_dep) == 0
            if unmet_deps:
                unmet = [s for s in self.positive_symbols(sym.direct_dep) if s.tri_value == 0]
                values = ", ".join(f"{s.name}=n" for s in unmet)
                clauses.append(f"{subject}needs {self.lib.expr_str(sym.direct_dep)}"
                               + (f" ({values})" if values else ""))
                pending += [s.name for s in unmet if s.name not in seen]
                seen.update(s.name for s in unmet)
            if name == symbol and not self.has_prompt(name):
                clauses.append("has no prompt, so a fragment line cannot set it")
            elif unmet_deps:
                continue
            elif not self.has_prompt(name):
                selectors = self.lib.expr_str(sym.rev_dep)
                clauses.append(f"{subject}has no prompt: only a select sets it" +
                               (f" (selected by {selectors})" if selectors != "n" else ""))
            elif not self.promptable(name):
                clauses.append(f"{subject}cannot be chosen for this architecture")
            else:
                clauses.append(f"{subject}is off: set CONFIG_{name}=y")
        return "; ".join(clauses)

    def symbols_in(self, expr: object) -> list:  # type: ignore[type-arg]
        return [s for s in self.lib.expr_items(expr)
                if isinstance(s, self.lib.Symbol) and not s.is_constant]

    def positive_symbols(self, expr: object) -> list:  # type: ignore[type-arg]
        """The symbols an expression needs on (those under a ! need the opposite)."""
        lib = self.lib
        if isinstance(expr, tuple) and expr[0] in (lib.AND, lib.OR):
            return [*self.positive_symbols(expr[1]), *self.positive_symbols(expr[2])]
        if isinstance(expr, lib.Symbol) and not expr.is_constant:
            return [expr]
        return []

    def settable(self, symbol: str, depth: int = 0) -> bool:
        """Whether some assignment can turn the symbol on (a prompt that is not fixed off
        or a settable selector), its dependencies satisfiable in turn."""
        sym = self.kconf.syms[symbol]
        if sym.tri_value == 2:
            return True
        if depth > 6 or not sym.nodes:
            return False
        if self.promptable(symbol):
            return self.satisfiable(sym.direct_dep, depth + 1)
        selected = any(self.satisfiable(term, depth + 1)
                       for term in self.lib.split_expr(sym.rev_dep, self.lib.OR))
        return selected or (self.defaults_on(symbol)
                            and self.satisfiable(sym.direct_dep, depth + 1))

    def defaults_on(self, symbol: str) -> bool:
        """Whether a default can turn the symbol on (``def_bool y`` and the like)."""
        return any(self.lib.expr_value(value) != 0 or self.symbols_in(value)
                   for value, _ in self.kconf.syms[symbol].defaults)

    def satisfiable(self, expr: object, depth: int) -> bool:
        lib = self.lib
        if lib.expr_value(expr) == 2:
            return True
        if isinstance(expr, tuple) and expr[0] == lib.OR:
            return self.satisfiable(expr[1], depth) or self.satisfiable(expr[2], depth)
        if isinstance(expr, tuple) and expr[0] == lib.AND:
            return self.satisfiable(expr[1], depth) and self.satisfiable(expr[2], depth)
        if isinstance(expr, lib.Symbol) and not expr.is_constant:
            return self.settable(expr.name, depth)
        return False

    def needs(self, expr: object) -> list[str]:
        """Symbols to turn on so that ``expr`` holds (the first workable alternative of
        each ||); empty if it holds already or cannot be made to."""
        lib = self.lib
        if lib.expr_value(expr) == 2:
            return []
        if isinstance(expr, tuple) and expr[0] == lib.AND:
            return [*self.needs(expr[1]), *self.needs(expr[2])]
        if isinstance(expr, tuple) and expr[0] == lib.OR:
            # The cheapest workable alternative; among equals, the one Kconfig defines
            # first (HIGHMEM4G before HIGHMEM64G, as the choice lists them).
            options = [(len(self.needs(alt)), self.position(alt), alt)
                       for alt in lib.split_expr(expr, lib.OR) if self.satisfiable(alt, 0)]
            return self.needs(min(options, key=lambda o: o[:2])[2]) if options else []
        if isinstance(expr, lib.Symbol) and not expr.is_constant:
            return self.turn_on(expr.name)
        return []

    def turn_on(self, symbol: str) -> list[str]:
        """What to set to y so that ``symbol`` becomes y: itself (if it has a prompt) and
        its dependencies, or the first settable symbol that selects it."""
        sym = self.kconf.syms[symbol]
        if sym.tri_value == 2:
            return []
        if self.promptable(symbol):
            return [*self.needs(sym.direct_dep), symbol]
        for term in self.lib.split_expr(sym.rev_dep, self.lib.OR):
            if self.satisfiable(term, 0):
                return self.needs(term)
        return self.needs(sym.direct_dep)

    def resolve(self, base: Path, requests: dict[str, Request]) -> dict[str, str]:
        """Extra symbols that let every request land: requests with a prompt first, those
        without (which follow from others) only once the rest hold."""
        extra: dict[str, str] = {}
        for _ in range(20):
            self.load(base, {**{r.symbol: r.value for r in requests.values()}, **extra})
            missing = [r for r in requests.values() if self.value(r.symbol) != r.value]
            prompted = [r for r in missing if r.symbol in self.kconf.syms
                        and self.has_prompt(r.symbol)]
            chosen = prompted or missing
            added = False
            for request in chosen:
                sym = self.kconf.syms.get(request.symbol)
                if sym is None or request.value != "y":
                    continue
                wanted = (self.needs(sym.direct_dep) if self.promptable(request.symbol)
                          else self.turn_on(request.symbol))
                for symbol in wanted:
                    if symbol not in extra and symbol not in requests:
                        extra[symbol] = "y"
                        added = True
            if not added:
                break
        return extra
