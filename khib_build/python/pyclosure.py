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


def main() -> None:
    job = json.loads(sys.argv[1])
    path = [job["site"], job["stdlib"]]
    excluded = [m for m in DEVELOPMENT if m not in job["modules"]]
    startup = modulefinder.ModuleFinder(path=path, excludes=INTERACTIVE + excluded)
    for name in STARTUP:
        startup.import_hook(name)
    finder = modulefinder.ModuleFinder(path=path, excludes=excluded)
    for name in job["modules"]:
        finder.import_hook(name)
    for script in job["scripts"]:
        finder.run_script(script)
    finder.modules.update(startup.modules)
    stdlib = os.path.join(job["stdlib"], "")
    site = os.path.join(job["site"], "")
    keep = {m.__file__ for m in finder.modules.values() if m.__file__
            and m.__file__.startswith(stdlib) and not m.__file__.startswith(site)}
    compile_tree(job["stdlib"], os.path.join(job["out"], "stdlib"), job["prefix"], keep)
    compile_tree(job["site"], os.path.join(job["out"], "site-packages"),
                 os.path.join(job["prefix"], "site-packages"), None)
    closure = sorted(name for name, m in finder.modules.items() if m.__file__ in keep)
    print(json.dumps({"closure": closure, "not_found": sorted(finder.badmodules)}))


if __name__ == "__main__":
    main()
