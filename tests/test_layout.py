"""The code's arrangement: stages import only downwards, no module hides process state.

A stage folder of khib_build/ may import from itself, from the stages below it and from
the shared helpers (the modules at the top of khib_build/), type-only imports included.
"""

from __future__ import annotations

import ast
import dataclasses
import graphlib
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGE = REPO / "khib_build"
# Lowest first: each stage stands on the ones before it.
STAGES = ("settings", "sources", "python", "engine", "image", "kernel", "pipeline", "reports",
          "cli")
SHARED = ("__init__", "errors", "cancel", "fsutil", "report")
MAX_LINES = 400


def modules() -> dict[str, Path]:
    """Every module by dotted name below khib_build."""
    return {".".join(path.relative_to(PACKAGE).with_suffix("").parts): path
            for path in sorted(PACKAGE.rglob("*.py"))}


def stage_of(module: str) -> str:
    """A module's stage: its folder, or its own name at the top (pipeline, shared helpers)."""
    head = module.split(".")[0]
    return "shared" if head in SHARED else "cli" if head == "__main__" else head


def rank(stage: str) -> int:
    return -1 if stage == "shared" else STAGES.index(stage)


def imported(path: Path) -> set[str]:
    """The khib_build modules a file imports anywhere (in functions and TYPE_CHECKING too)."""
    names: set[str] = set()
    known = modules()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("khib_build"):
                continue
            base = node.module.removeprefix("khib_build").lstrip(".")
            for alias in node.names:  # `from khib_build.x import module` names a module
                full = f"{base}.{alias.name}".lstrip(".")
                names.add(full if full in known or f"{full}.__init__" in known else base)
        elif isinstance(node, ast.Import):
            names |= {a.name.removeprefix("khib_build.") for a in node.names
                      if a.name.startswith("khib_build.")}
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; spell out khib_build.")
    return {name or "__init__" for name in names}


def test_every_folder_is_a_known_stage() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    tops = {p.stem for p in PACKAGE.glob("*.py")}
    assert folders <= set(STAGES), folders - set(STAGES)
    assert tops <= set(SHARED) | {"__main__", "pipeline"}, tops


def test_stages_import_only_downwards() -> None:
    wrong = []
    for module, path in modules().items():
        own = stage_of(module)
        for target in imported(path):
            other = stage_of(target)
            if other != own and rank(other) > rank(own):
                wrong.append(f"{module} ({own}) imports {target} ({other})")
    assert not wrong, "\n".join(wrong)


def test_no_import_circle() -> None:
    graph = {module: {t.removesuffix(".__init__") for t in imported(path)} - {module}
             for module, path in modules().items()}
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import circle: {' -> '.join(exc.args[1])}")


def test_no_module_is_long() -> None:
    long = {m: n for m, p in modules().items()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


PAYLOAD = (REPO / "recipes" / "khib-core" / "src", REPO / "recipes" / "khib-tools" / "src")


def test_no_payload_file_is_long() -> None:
    """The payload has the generator's house rules: a file a job, none over the limit."""
    files = [p for folder in PAYLOAD for p in sorted(folder.rglob("*"))
             if p.suffix in (".c", ".h", ".py")]
    assert len(files) > 25
    long = {p.name: n for p in files if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_the_payload_tools_import_no_circle() -> None:
    """khib_tools' modules import one another without a circle."""
    folder = PAYLOAD[1] / "khib_tools"
    graph: dict[str, set[str]] = {}
    for path in folder.glob("*.py"):
        graph[path.stem] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("khib_tools"):
                names = [node.module.removeprefix("khib_tools").lstrip(".")] \
                    if node.module != "khib_tools" else [a.name for a in node.names]
                graph[path.stem] |= {n for n in names if n} - {path.stem}
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import circle: {' -> '.join(exc.args[1])}")


WRITES_ENVIRON = {"update", "setdefault", "pop", "popitem", "clear", "__setitem__",
                  "__delitem__"}


def hidden_state(path: Path) -> list[str]:
    """Writes to the process's environment, working directory or umask in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        where = f"{path.name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Attribute) and node.attr in (
                "chdir", "fchdir", "umask", "putenv", "unsetenv", "environb"):
            found.append(f"{where}: {node.attr}")
        if isinstance(node, ast.Attribute) and node.attr in WRITES_ENVIRON and isinstance(
                node.value, ast.Attribute) and node.value.attr == "environ":
            found.append(f"{where}: environ.{node.attr}")
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, ast.AugAssign | ast.AnnAssign)
                   else node.targets if isinstance(node, ast.Delete) else [])
        for target in targets:
            if isinstance(target, ast.Subscript) and isinstance(
                    target.value, ast.Attribute) and target.value.attr == "environ":
                found.append(f"{where}: environ[...] written")
            if isinstance(target, ast.Attribute) and target.attr == "environ":
                found.append(f"{where}: environ replaced")
    return found


def test_no_hidden_process_state() -> None:
    found = [line for path in modules().values() for line in hidden_state(path)]
    assert not found, "\n".join(found)


def test_the_state_finder_finds_each_form(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import os\nos.environ['A'] = '1'\nos.environ.update(B='2')\n"
                      "os.environ.setdefault('C', '3')\nos.environ.pop('D')\nos.putenv('E', '')\n"
                      "del os.environ['F']\nos.chdir('/')\nos.umask(0)\nos.environ |= {}\n")
    assert len(hidden_state(sample)) == 9


def settings_classes() -> list[type]:
    """Every class whose fields are settings: configs, recipes, run options."""
    from khib_build.settings.config import Allowance, ImageConfig, Toolchain
    from khib_build.settings.options import Options
    from khib_build.settings.pins import (
        DebianSource,
        DebPackage,
        DebsByArch,
        KernelPin,
        SourceSpec,
    )
    from khib_build.settings.recipes import Recipe, ToolchainVariables

    return [ImageConfig, Toolchain, Allowance, KernelPin, Recipe, ToolchainVariables,
            SourceSpec, DebianSource, DebPackage, DebsByArch, Options]


def test_every_default_is_declared_in_the_settings_table() -> None:
    """A settings class has no literal default of its own: each field with a default
    is a row of the table (``setting()``), which the docs and --help read."""
    own = [f"{cls.__name__}.{f.name}" for cls in settings_classes()
           for f in dataclasses.fields(cls)
           if (f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING)
           and "kind" not in f.metadata and f.name != "origin"]
    assert not own, own


def test_help_shows_the_tables_defaults() -> None:
    from khib_build.cli import parser
    from khib_build.settings.kinds import Flag
    from khib_build.settings.options import OPTIONS

    text = " ".join(parser()._subparsers._group_actions[0].choices["rootfs"]  # type: ignore
                    .format_help().split())
    for option in OPTIONS.values():
        if option.flags and not isinstance(option.kind, Flag):
            assert f"(default: {' '.join(option.described_default().split())}" in text \
                or f"else {option.described_default()})" in text, option.name
