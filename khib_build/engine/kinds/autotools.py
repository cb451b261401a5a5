"""kind: autotools: ``./configure`` for the target (build and host triplets, /usr, the
toolchain as configure's variables), then as kind make, without the toolchain variables
(configure has recorded them)."""

from __future__ import annotations

import shlex

from khib_build.engine.kinds.base import COMMANDS, Kind, Step, rendered, words
from khib_build.engine.kinds.make import MAKE, make_steps, toolchain_assignments
from khib_build.settings.recipes import Recipe


class Autotools(Kind):
    name = "autotools"
    summary = "`./configure` for the target, then make"
    keys = COMMANDS | MAKE | {"configure", "configure_env"}

    def steps(self, recipe: Recipe, values: dict[str, object]) -> list[Step]:
        configure = ["./configure", f"--build={values['build_triplet']}",
                     f"--host={values['target']}", "--prefix=/usr",
                     *rendered(recipe, "configure", values),
                     *toolchain_assignments(recipe, values)]
        return [("configure", environment(rendered(recipe, "configure_env", values))
                 + words(configure)), *make_steps(recipe, values, [])]


def environment(items: list[str]) -> str:
    """VARIABLE=value words before a command: only the value quoted, or the shell would
    take a quoted assignment for the command's name."""
    return "".join(f"{name}={shlex.quote(value)} " for name, value in
                   (item.split("=", 1) for item in items))


KIND = Autotools()
