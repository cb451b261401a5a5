"""kind: make: the build commands, then ``make`` with the toolchain as make variables,
the recipe's make arguments and targets, then ``make DESTDIR=… install`` and the install
commands."""

from __future__ import annotations

from khib_build.engine.kinds.base import COMMANDS, Kind, Step, numbered, rendered, words
from khib_build.settings.recipes import Recipe

MAKE = frozenset({"make", "make_targets", "install_targets", "destdir_variable"})


class Make(Kind):
    name = "make"
    summary = "`make` with the toolchain as make variables, then `make install`"
    keys = COMMANDS | MAKE | {"toolchain_variables"}

    def steps(self, recipe: Recipe, values: dict[str, object]) -> list[Step]:
        return make_steps(recipe, values, toolchain_assignments(recipe, values))


def toolchain_assignments(recipe: Recipe, values: dict[str, object]) -> list[str]:
    """VARIABLE=value for the compiler and flags, under the names the recipe passes them."""
    names = recipe.toolchain_variables
    pairs = ((names.cc, values["cc"]), (names.cflags, values["cflags"]),
             (names.ldflags, values["ldflags"]))
    return [f"{name}={value}" for name, value in pairs if name]


def make_steps(recipe: Recipe, values: dict[str, object], variables: list[str]) -> list[Step]:
    """The build commands, make (with ``variables`` first) and its install, the install
    commands: the steps make and autotools share."""
    make = variables + rendered(recipe, "make", values)
    steps = numbered("build", rendered(recipe, "build", values))
    steps.append(("make", words(["make", *make, *rendered(recipe, "make_targets", values)])))
    targets = rendered(recipe, "install_targets", values)
    if targets:
        destdir = f"{recipe.destdir_variable}={values['destdir']}"
        steps.append(("make install", words(["make", *make, destdir, *targets])))
    return steps + numbered("install", rendered(recipe, "install", values))


KIND = Make()
