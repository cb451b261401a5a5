"""The shell steps of a package build, as its kind lays them out.

commands: the recipe's build and install commands.  make: the recipe's build commands,
then ``make`` with the toolchain as make variables and the recipe's make arguments and
targets, then ``make DESTDIR=… install`` and the recipe's install commands.  autotools:
``./configure`` for the target (build and host triplets, /usr, the toolchain as
configure's variables), then the recipe's build commands and make as for ``make``.
Every item of a list is rendered and passed as one shell word.
"""

from __future__ import annotations

import shlex

from khib_build.settings.recipes import Recipe, render_command


def rendered(recipe: Recipe, key: str, values: dict[str, object]) -> list[str]:
    return [render_command(recipe, key, i, values) for i in range(len(getattr(recipe, key)))]


def words(items: list[str]) -> str:
    return " ".join(shlex.quote(item) for item in items)


def environment(items: list[str]) -> str:
    """VARIABLE=value words before a command: only the value quoted, or the shell would
    take a quoted assignment for the command's name."""
    return "".join(f"{name}={shlex.quote(value)} " for name, value in
                   (item.split("=", 1) for item in items))


def toolchain_assignments(recipe: Recipe, values: dict[str, object]) -> list[str]:
    """VARIABLE=value for the compiler and flags, under the names the kind passes them."""
    names = recipe.toolchain_variables
    pairs = ((names.cc, values["cc"]), (names.cflags, values["cflags"]),
             (names.ldflags, values["ldflags"]))
    return [f"{name}={value}" for name, value in pairs if name]


def commands(recipe: Recipe, values: dict[str, object]) -> list[tuple[str, str]]:
    """(step name, shell command) pairs, in the order they run."""
    build = rendered(recipe, "build", values)
    install = rendered(recipe, "install", values)
    steps: list[tuple[str, str]] = []
    if recipe.kind in ("make", "autotools"):
        make = rendered(recipe, "make", values)
        if recipe.kind == "autotools":
            env = rendered(recipe, "configure_env", values)
            configure = ["./configure", f"--build={values['build_triplet']}",
                         f"--host={values['target']}", "--prefix=/usr",
                         *rendered(recipe, "configure", values),
                         *toolchain_assignments(recipe, values)]
            steps.append(("configure", environment(env) + words(configure)))
        else:
            make = toolchain_assignments(recipe, values) + make
        steps += numbered("build", build)
        steps.append(("make", words(["make", *make, *rendered(recipe, "make_targets", values)])))
        targets = rendered(recipe, "install_targets", values)
        if targets:
            destdir = f"{recipe.destdir_variable}={values['destdir']}"
            steps.append(("make install", words(["make", *make, destdir, *targets])))
        return steps + numbered("install", install)
    if recipe.kind == "commands":
        return numbered("build", build) + numbered("install", install)
    return []


def numbered(step: str, items: list[str]) -> list[tuple[str, str]]:
    return [(f"{step} {i + 1}/{len(items)}", item) for i, item in enumerate(items)]
