"""kind: python: a pure-Python package (its src/ or source) installed with its console
scripts for the image's interpreter, which it depends on."""

from __future__ import annotations

from pathlib import Path

from khib_build.engine.kinds.base import Kind, Step
from khib_build.python import pyinstall
from khib_build.settings.recipes import Recipe

INTERPRETER = "python3"  # the recipe of the interpreter python packages run on


class Python(Kind):
    name = "python"
    summary = "a pure-Python package (its src/ or source) with its console scripts"
    keys = frozenset({"source"})

    def check(self, recipe: Recipe) -> None:
        if INTERPRETER not in recipe.depends:
            assert recipe.origin is not None
            raise recipe.origin.error("kind", "a python package runs on the image's "
                                      f"interpreter: add {INTERPRETER} to its depends")

    def steps(self, recipe: Recipe, values: dict[str, object]) -> list[Step]:
        return [("install python package", lambda: pyinstall.install(
            Path(str(values["srcdir"])), Path(str(values["destdir"])),
            Path(str(values["sysroot"]))))]


KIND = Python()
