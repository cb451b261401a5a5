"""Install a pure-Python package (recipe ``kind: python``) into its staging tree.

The project's importable modules (the packages and modules at its root, or under
``src/``) go to ``usr/lib/python3.X/site-packages/``; each console script of
``[project.scripts]`` in ``pyproject.toml`` becomes ``usr/bin/<name>``, a small script run
by the image's ``/usr/bin/python3``.  Byte-compiling happens later, for the whole image
at once (:mod:`pythonlib`).
"""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path
from typing import Any

from khib_build.errors import KhibError
from khib_build.fsutil import make_dirs
from khib_build.python.pythonlib import interpreter_lib

SKIPPED = {"setup.py", "conftest.py"}
SCRIPT = """#!/usr/bin/python3
# The {name} command of {project}, written by khib-build.
import sys

from {module} import {head}

sys.exit({call}())
"""


def python_dir(sysroot: Path) -> str:
    """``usr/lib/python3.X`` as the interpreter in the sysroot lays it out."""
    lib = interpreter_lib(sysroot)
    if lib is None:
        raise KhibError("no usr/lib/python3.X in the sysroot: the package must depend on the "
                        "python3 package")
    return lib.relative_to(sysroot).as_posix()


def install(project: Path, destdir: Path, sysroot: Path) -> list[str]:
    """Copy the project's modules and write its console scripts; what was installed."""
    root = project / "src" if (project / "src").is_dir() else project
    site = destdir / python_dir(sysroot) / "site-packages"
    make_dirs(site)
    installed = []
    for item in sorted(root.iterdir()):
        if item.is_dir() and (item / "__init__.py").is_file():
            shutil.copytree(item, site / item.name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            installed.append(f"{item.name}/")
        elif item.suffix == ".py" and item.name not in SKIPPED:
            shutil.copy2(item, site / item.name)
            installed.append(item.name)
    if not installed:
        raise KhibError(f"{project}: no Python package or module to install")
    metadata = project_table(project)
    for name, target in scripts(project, metadata).items():
        write_script(destdir / "usr" / "bin" / name, name, metadata.get("name", project.name),
                     target)
        installed.append(f"usr/bin/{name}")
    return installed


def project_table(project: Path) -> dict[str, Any]:
    """``[project]`` of the project's pyproject.toml (empty without one)."""
    pyproject = project / "pyproject.toml"
    if not pyproject.is_file():
        return {}
    try:
        table: dict[str, Any] = tomllib.loads(pyproject.read_text()).get("project", {})
    except tomllib.TOMLDecodeError as exc:
        raise KhibError(f"{pyproject}: {exc}") from None
    return table


def scripts(project: Path, metadata: dict[str, Any]) -> dict[str, str]:
    """``[project.scripts]``: command name -> ``module:attr``."""
    pyproject = project / "pyproject.toml"
    found: dict[str, str] = metadata.get("scripts", {})
    for name, target in found.items():
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or not re.fullmatch(
                r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", target):
            raise KhibError(f"{pyproject}: console script {name} = {target!r}: expected "
                            "name = \"module:function\"")
    return found


def write_script(path: Path, name: str, project: str, target: str) -> None:
    module, attr = target.split(":")
    head = attr.split(".")[0]
    make_dirs(path.parent)
    path.write_text(SCRIPT.format(name=name, project=project, module=module, head=head,
                                  call=attr))
    path.chmod(0o755)
