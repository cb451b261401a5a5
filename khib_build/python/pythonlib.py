"""The image's Python: the standard library pruned to what the image's code imports.

When the image holds an interpreter (``usr/lib/python3.X``), its standard library is
replaced by the closure of the modules that the image's Python packages, its Python
scripts in ``usr/bin`` and the recipes' ``python_modules`` import, found with
``modulefinder`` and byte-compiled as sourceless .pyc files with unchecked-hash
validation, so the same inputs give the same bytes.  The work runs in the host's
interpreter of the target's version (:mod:`pyclosure`).  The closure is listed in
``<out>/python-modules.txt``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from khib_build.errors import KhibError
from khib_build.fsutil import make_dirs
from khib_build.python import pyclosure
from khib_build.report import say
from khib_build.settings.recipes import Recipe


def interpreter_lib(root: Path) -> Path | None:
    found = sorted(p for p in (root / "usr" / "lib").glob("python3.*") if p.is_dir())
    return found[-1] if found else None


def module_names(site: Path) -> list[str]:
    """Every module below ``site``, as dotted names."""
    names = []
    for path in sorted(site.rglob("*.py")):
        parts = list(path.relative_to(site).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if parts:
            names.append(".".join(parts))
    return names


def python_scripts(root: Path) -> list[str]:
    bin_dir = root / "usr" / "bin"
    return [str(p) for p in sorted(bin_dir.iterdir()) if p.is_file() and not p.is_symlink()
            and p.read_bytes()[:64].startswith(b"#!/usr/bin/python3")] if bin_dir.is_dir() \
        else []


def builtin_modules(root: Path, lib: Path) -> list[str] | None:
    """The built-in modules of the image's interpreter, asked of it (with the image's
    standard library as its home); None if it cannot run on this machine."""
    binary = root / "usr" / "bin" / lib.name
    binary = binary if binary.is_file() else root / "usr" / "bin" / "python3"
    try:
        result = subprocess.run(
            [str(binary), "-S", "-c", "import sys; print(' '.join(sys.builtin_module_names))"],
            capture_output=True, text=True, check=False, timeout=60,
            env={"PYTHONHOME": str(root / "usr"), "PYTHONNOUSERSITE": "1", "LC_ALL": "C"})
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.split() if result.returncode == 0 else None


def prune(root: Path, recipes: Sequence[Recipe], listing: Path
          ) -> list[dict[str, object]] | None:
    """Replace the image's standard library by the compiled closure, whose module names
    go to ``listing``; return the imports that fail for want of a C extension, each with
    its image path (None when the image has no interpreter)."""
    lib = interpreter_lib(root)
    if lib is None:
        return None
    host = shutil.which(lib.name)
    if host is None:
        raise KhibError(f"the image's Python is {lib.name}: compiling its modules needs the "
                        f"host's {lib.name} (apt-get install {lib.name})")
    site = lib / "site-packages"
    make_dirs(site)
    extra = sorted({m for r in recipes for m in r.python_modules})
    builtins = builtin_modules(root, lib)
    if builtins is None:
        say(f"python: the image's {lib.name} does not run on this machine: the check of "
            "its imports is left out")
    with tempfile.TemporaryDirectory(prefix=".python-", dir=listing.parent) as work:
        job = {"stdlib": str(lib), "site": str(site), "scripts": python_scripts(root),
               "modules": extra + module_names(site), "out": work,
               "prefix": "/" + lib.relative_to(root).as_posix(), "builtins": builtins}
        result = subprocess.run([host, "-I", pyclosure.__file__, json.dumps(job)],
                                capture_output=True, text=True, check=False, umask=0o022)
        if result.returncode != 0:
            raise KhibError(f"compiling the image's Python failed:\n{result.stderr[-2000:]}")
        found = json.loads(result.stdout)
        make_dirs(Path(work) / "site-packages")
        shutil.rmtree(lib)
        shutil.move(str(Path(work) / "stdlib"), lib)
        shutil.move(str(Path(work) / "site-packages"), site)
    make_dirs(lib / "lib-dynload")  # the landmark of exec_prefix
    closure: list[str] = found["closure"]
    listing.write_text("\n".join(closure) + "\n")
    say(f"python: {len(closure)} standard library modules kept, compiled for {lib.name}")
    return [{**problem, "file": Path(str(problem["file"])).relative_to(root).as_posix()}
            for problem in found["problems"]]
