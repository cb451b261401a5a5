"""Why requests did not land, and what would make them land.

The tree's Kconfig files are read with kconfiglib 14.1. That version predates the bare
``modules`` keyword of 6.1's ``kernel/module/Kconfig`` (the older spelling is ``option
modules``; kconfiglib treats the symbol MODULES as the modules switch either way), so
the files are read through :class:`KernelKconfig`, which respells that one keyword and
changes nothing else. kconfiglib takes the tree, the architecture and the compiler from
the environment (and its ``$(shell,...)`` calls inherit it), so it runs in a child process
with an environment of its own (:func:`kconfig_env`), never in khib-build's.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from khib_build.engine.keys import compiler_version
from khib_build.kernel.kconfig import (
    KconfigError,
    Request,
    fragment_text,
    kernel_version,
    merge,
    not_landed,
)
from khib_build.report import say
from khib_build.settings.config import ARCHES


def kconfig_env(src: Path, arch: str) -> dict[str, str]:
    """The environment kconfiglib reads the tree ``src`` for ``arch`` in."""
    return {**os.environ, "srctree": str(src), "ARCH": ARCHES[arch].kernel_arch,
            "SRCARCH": "x86", "KERNELVERSION": kernel_version(src), "CC": "gcc", "LD": "ld",
            "HOSTCC": "gcc", "HOSTCXX": "g++", "CC_VERSION_TEXT": compiler_version(["gcc"])}


@dataclass(frozen=True)
class Check:
    """What the kernel's tools made of a fragment."""

    missing: list[Request]
    reasons: dict[str, str]
    extra: dict[str, str]  # proposed by --resolve
    extra_missing: list[Request]  # still not landed with the proposal applied


def check(src: Path, arch: str, base: str, requests: dict[str, Request], work: Path,
          log: TextIO, resolve: bool = False, tools: Path | None = None) -> Check:
    """Merge ``requests`` into ``base`` with the tree's tools (kept in ``tools``, see
    :func:`merge`); what did not land and why; with ``resolve``, the extra symbols that
    make everything land (checked the same way)."""
    work.mkdir(parents=True, exist_ok=True)
    fragment = work / "fragment.config"
    fragment.write_text(fragment_text(requests))
    actual = merge(src, work / "merged", arch, base, [fragment], log, tools)
    missing = not_landed(requests, actual)
    if not missing:
        return Check([], {}, {}, [])
    say(f"kconfig: {len(missing)} request(s) did not land; reading Kconfig to say why")
    answer = in_child(src, arch, {"merged": str(work / "merged" / ".config"),
                                  "base": str(work / "merged" / "base.config"),
                                  "missing": [r.symbol for r in missing],
                                  "requests": {s: r.value for s, r in requests.items()},
                                  "resolve": resolve})
    reasons, extra = answer["reasons"], answer["extra"]
    if not resolve:
        return Check(missing, reasons, {}, [])
    proposal = work / "resolved.config"
    proposal.write_text("".join(f"CONFIG_{s}={v}\n" for s, v in extra.items()))
    resolved = merge(src, work / "resolved", arch, base, [fragment, proposal], log, tools)
    return Check(missing, reasons, extra, not_landed(requests, resolved))


def report_check(result: Check) -> list[str]:
    lines = [f"{r.symbol}={r.value}: not landed (asked by {', '.join(r.askers)}): "
             f"{result.reasons[r.symbol]}" for r in result.missing]
    if result.extra:
        lines.append("--resolve proposes: " + " ".join(f"CONFIG_{s}={v}"
                                                       for s, v in result.extra.items()))
        lines += [f"{r.symbol}={r.value}: still not landed with the proposal"
                  for r in result.extra_missing]
    return lines


class KernelKconfig:
    """A kernel tree's Kconfig, read with kconfiglib, for explaining and resolving."""

    def __init__(self, src: Path, arch: str) -> None:
        import kconfiglib

        self.lib = kconfiglib
        wanted = {"srctree": str(src), "ARCH": ARCHES[arch].kernel_arch}
        if any(os.environ.get(name) != value for name, value in wanted.items()):
            raise KconfigError("kconfiglib must run in the environment kconfig_env() gives")

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

    def resolve(self, base: Path, requests: dict[str, str]) -> dict[str, str]:
        """Extra symbols that let every request (symbol: value) land: requests with a
        prompt first, those without (which follow from others) only once the rest hold."""
        extra: dict[str, str] = {}
        asked = [Request(symbol, value, ()) for symbol, value in requests.items()]
        for _ in range(20):
            self.load(base, {**requests, **extra})
            missing = [r for r in asked if self.value(r.symbol) != r.value]
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


def in_child(src: Path, arch: str, question: dict[str, Any]) -> dict[str, Any]:
    """Ask a child process with kconfiglib's environment why ``question["missing"]`` did
    not land in ``question["merged"]`` (and, to ``resolve``, what would make them land)."""
    question = {"src": str(src), "arch": arch, **question}
    done = subprocess.run([sys.executable, "-m", __name__], input=json.dumps(question),
                          capture_output=True, text=True, env=kconfig_env(src, arch),
                          check=False)
    if done.returncode != 0:
        raise KconfigError(f"kconfig: reading {src}/Kconfig failed: "
                           f"{done.stderr.strip().splitlines()[-1:] or done.returncode}")
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def answer(question: dict[str, Any]) -> dict[str, Any]:
    """The child's side of :func:`in_child`."""
    kconfig = KernelKconfig(Path(question["src"]), question["arch"])
    kconfig.load(Path(question["merged"]))
    reasons = {symbol: kconfig.why(symbol) for symbol in question["missing"]}
    extra = kconfig.resolve(Path(question["base"]), question["requests"]) \
        if question["resolve"] else {}
    return {"reasons": reasons, "extra": extra}


if __name__ == "__main__":
    print(json.dumps(answer(json.load(sys.stdin))))
