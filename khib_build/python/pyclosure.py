"""Run by the host's python3.X (the target interpreter's version): the standard library
closure of the image's Python code, byte-compiled.

Kept apart from khib-build's own interpreter on purpose: a .pyc is only valid for the
version that wrote it, and a fresh process writes the same bytes every time.  Standard
library only.  Input (argv[1], JSON): ``stdlib`` and ``site`` (folders of the image
tree), ``scripts`` (files to scan), ``modules`` (names to include), ``prefix`` (where
the stdlib lives in the image) and ``out`` (where to write).  Output (stdout, JSON): the
closure's module names, and the imported names that were not found.
"""

from __future__ import annotations

import ast
import importlib.machinery
import json
import modulefinder
import os
import py_compile
import sys

# What the interpreter imports before any script runs (3.11 freezes the rest) ...
STARTUP = ["site", "encodings", "encodings.aliases", "encodings.utf_8", "encodings.ascii",
           "encodings.latin_1"]
# ... and what those import only for the interactive prompt and help(): not followed
# from them (the image's own code still pulls them in if it imports them).
INTERACTIVE = ["pydoc", "rlcompleter", "readline", "_osx_support", "_aix_support"]
# Development tools that many modules import only in their "if __name__ == '__main__'"
# self-tests: never followed, unless a recipe names them in python_modules.
DEVELOPMENT = ["doctest", "pdb", "unittest", "pydoc", "tkinter", "idlelib", "lib2to3",
               "distutils", "ensurepip", "turtle", "test"]


def compile_tree(source_root: str, out_root: str, image_root: str, keep: set[str] | None
                 ) -> None:
    """Each kept .py of ``source_root`` as a sourceless .pyc at the same place under
    ``out_root``, with unchecked-hash validation (no timestamps in it)."""
    for folder, dirs, files in os.walk(source_root):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            if not name.endswith(".py") or (keep is not None and path not in keep):
                continue
            rel = os.path.relpath(path, source_root)
            target = os.path.join(out_root, rel + "c")
            os.makedirs(os.path.dirname(target), exist_ok=True)
            py_compile.compile(path, cfile=target, dfile=os.path.join(image_root, rel),
                               doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)


# The nodes an import statement can be in (expressions cannot hold statements).
STATEMENTS = (ast.stmt, ast.excepthandler, ast.match_case)
# The exception types whose handler makes an import optional.
CATCHES_IMPORT = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


def c_extensions() -> set[str]:
    """The C extension modules CPython has on Linux: this interpreter's built-in ones and
    the shared ones beside its standard library."""
    found = set(sys.builtin_module_names)
    for folder in sys.path:
        if os.path.basename(folder) == "lib-dynload" and os.path.isdir(folder):
            for name in os.listdir(folder):
                for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                    if name.endswith(suffix):
                        found.add(name[: -len(suffix)])
    return found


def catches_import(handler: ast.ExceptHandler) -> bool:
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return handler.type is None or any(
        isinstance(k, ast.Name) and k.id in CATCHES_IMPORT for k in kinds)


def imports_of(tree: ast.AST, package: str) -> list[tuple[str, int, bool, bool]]:
    """(module, line, guarded, at module level) for each import statement of a module."""
    found = []

    def visit(node: ast.AST, guarded: bool, top: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend((a.name, node.lineno, guarded, top) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".") if package else []
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(filter(None, [*parts, base]))
            found.append((base, node.lineno, guarded, top))
        elif isinstance(node, ast.Try | ast.TryStar):
            optional = guarded or any(catches_import(h) for h in node.handlers)
            for child in node.body:
                visit(child, optional, top)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, guarded, top)
            return
        inner = top and not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, STATEMENTS):  # an expression holds no import statement
                visit(child, guarded, inner)

    visit(tree, False, True)
    return found


def import_problems(sources: dict[str, tuple[str, str]], own: set[str], present: set[str],
                    builtins: set[str]) -> list[dict[str, object]]:
    """Imports that fail in the image because a C extension is absent, directly or
    through the modules in between: errors in the image's own code (``own``), warnings
    where an ``except ImportError`` guards them.  ``sources`` maps each module to its file
    and package."""
    lacking = {name for name in c_extensions() if name not in builtins | present}
    imports = {}
    for name, (path, package) in sources.items():
        with open(path, "rb") as handle:
            imports[name] = imports_of(ast.parse(handle.read(), path), package)
    why = {name: f"{name} is a C extension the image's interpreter lacks" for name in lacking}

    def failing(module: str) -> str | None:
        parts = module.split(".")
        return next((why[p] for p in (".".join(parts[:i + 1]) for i in range(len(parts)))
                     if p in why), None)

    changed = True
    while changed:  # a module fails when it imports a failing one at its top, unguarded
        changed = False
        for name, found in imports.items():
            for module, line, guarded, top in found:
                reason = failing(module)
                if name not in why and reason and top and not guarded:
                    why[name] = f"imports {module} (line {line}), which {reason}" \
                        if reason.startswith("imports") else f"imports {module}: {reason}"
                    changed = True
    problems = []
    for name, found in sorted(imports.items()):
        for module, line, guarded, _top in found:
            reason = failing(module)
            if reason is None or (not guarded and (name not in own or module in own)):
                continue  # fine; or not the image's own code; or reported in that module
            problems.append({
                "file": sources[name][0], "line": line,
                "severity": "warning" if guarded else "error",
                "message": f"{module} is absent (a guarded import): {reason}" if guarded
                else f"import {module} fails: {reason}"})
    return problems


def main() -> None:
    job = json.loads(sys.argv[1])
    path = [job["site"], job["stdlib"]]
    excluded = [m for m in DEVELOPMENT if m not in job["modules"]]
    finder = modulefinder.ModuleFinder(path=path, excludes=excluded)
    for name in job["modules"]:
        finder.import_hook(name)
    for script in job["scripts"]:
        finder.run_script(script)
    # The start-up modules the image's code already reached are not scanned again: that
    # scan followed all their imports, the interactive ones included.
    startup = modulefinder.ModuleFinder(path=path, excludes=INTERACTIVE + excluded)
    startup.modules.update(finder.modules)
    for name in STARTUP:
        startup.import_hook(name)
    finder.modules.update(startup.modules)
    stdlib = os.path.join(job["stdlib"], "")
    site = os.path.join(job["site"], "")
    keep = {m.__file__ for m in finder.modules.values() if m.__file__
            and m.__file__.startswith(stdlib) and not m.__file__.startswith(site)}
    compile_tree(job["stdlib"], os.path.join(job["out"], "stdlib"), job["prefix"], keep)
    compile_tree(job["site"], os.path.join(job["out"], "site-packages"),
                 os.path.join(job["prefix"], "site-packages"), None)
    closure = sorted(name for name, m in finder.modules.items() if m.__file__ in keep)
    problems: list[dict[str, object]] = []
    if job["builtins"] is not None:
        sources = {name: (m.__file__, name if m.__path__ else name.rpartition(".")[0])
                   for name, m in finder.modules.items()
                   if m.__file__ and m.__file__.endswith(".py") and name != "__main__"}
        own = {name for name, (path, _) in sources.items() if path.startswith(site)}
        for script in job["scripts"]:
            sources[script] = (script, "")
            own.add(script)
        present = {name for name, m in finder.modules.items() if m.__file__}
        problems = import_problems(sources, own, present, set(job["builtins"]))
    print(json.dumps({"closure": closure, "not_found": sorted(finder.badmodules),
                      "problems": problems}))


if __name__ == "__main__":
    main()
