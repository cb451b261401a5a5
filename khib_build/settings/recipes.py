"""Recipes: one folder per package, ``recipes/<name>/recipe.yaml``, found and ordered."""

from __future__ import annotations

import graphlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from khib_build.settings.config import KERNEL_OPTION, ImageConfig
from khib_build.settings.kinds import (
    NAME,
    FilePath,
    Flag,
    Int,
    ListOf,
    Optional,
    Source,
    Str,
)
from khib_build.settings.paths import data_dir
from khib_build.settings.pins import Deb, DebsByArch, SourceSpec
from khib_build.settings.schema import MappingOf, Origin, Record, compose, origin_field, setting
from khib_build.settings.versioned import with_version

DEFAULT_EXPANSION = 20  # a kernel source .tar.xz unpacks to about 9 times its size
BUILTIN_RECIPES = data_dir("recipes")
KERNEL_RECIPE = "linux"  # the kernel's recipe: not a package, read by kconfig and kernel
TEMPLATE = Str(expected="a command string")
ARGUMENT = Str(expected="one argument (a jinja2 template)")
ASSIGNMENT = Str(r"[A-Za-z_][A-Za-z0-9_]*=.*", "VARIABLE=value (a jinja2 template)")
MAKE_VARIABLE = Str(r"[A-Za-z_][A-Za-z0-9_]*", "a make variable name")
SERIES = Str(r"[0-9]+\.[0-9]+", "a kernel release series, e.g. 6.12", verbatim=True)
# The variables a build or install command may use, each with its meaning.
BUILD_VARIABLES = {
    "name": "the package name",
    "version": "the package version",
    "arch": "the target architecture (i386 or x86_64)",
    "target": "the target GNU triplet (i686-linux-gnu or x86_64-linux-gnu)",
    "build_triplet": "the GNU triplet of the machine the build runs on (gcc -dumpmachine)",
    "cc": "the target compiler command, with its fixed arguments (e.g. gcc -m32)",
    "cflags": "C compiler flags: the toolchain's, the recipe's, reproducibility flags",
    "ldflags": "linker flags: the toolchain's and the recipe's",
    "jobs": "the run's job budget, for tools other than make (make shares it by itself)",
    "srcdir": "the unpacked source (the working directory of each command)",
    "destdir": "the package's staging tree: install here, as if it were /",
    "sysroot": "the C library plus the dependencies' staging trees ({{ cc }} points there)",
    "files": "the recipe's files/ folder",
    "source_date_epoch": "the timestamp to stamp into build outputs",
}


@dataclass(frozen=True, kw_only=True)
class ToolchainVariables:
    """The make variables a `kind: make` recipe passes the toolchain in; null passes none."""

    cc: str | None = setting(Optional(MAKE_VARIABLE), "CC", "gets {{ cc }}")
    cflags: str | None = setting(Optional(MAKE_VARIABLE), "CFLAGS", "gets {{ cflags }}")
    ldflags: str | None = setting(Optional(MAKE_VARIABLE), "LDFLAGS", "gets {{ ldflags }}")


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """How one package is fetched, built and installed."""

    name: str = setting(NAME, help="package name, the same as the recipe's folder")
    version: str = setting(Str(verbatim=True), help="upstream version")
    license: str = setting(Str(), help="SPDX license expression")
    kind: str = setting(
        NAME, "commands",
        "commands: the recipe's build and install commands; make: `make` with the toolchain "
        "as make variables, then `make install`; autotools: `./configure` for the target, "
        "then make; python: a pure-Python package (its src/ or source) with its console "
        "scripts; deb: Debian binary packages unpacked; kernel: the kernel's recipe "
        "(khib-build kernel builds it)",
    )
    license_files: tuple[str, ...] = setting(ListOf(Str()), (), "license files in the source")
    source: SourceSpec | None = setting(
        Optional(Record(SourceSpec)), None, "pinned upstream source; none for src/ packages"
    )
    max_expansion: int = setting(
        Int(1, 100_000), DEFAULT_EXPANSION,
        "how many times its own size the source may unpack to (a guard against bombs)",
    )
    patches: tuple[Path, ...] = setting(
        ListOf(FilePath(must_exist=True)), (),
        "patches applied with patch -p1, in order (linux: khib's own fixes, for the kernel "
        "khib images boot)",
    )
    backports: tuple[tuple[str, tuple[Path, ...]], ...] = setting(
        MappingOf(SERIES, ListOf(FilePath(must_exist=True))), (),
        "linux only: upstream fixes a kernel release lacks, by release series (\"6.12\": "
        "[patches]); applied, before patches, to every kernel of that series",
    )
    device_tables: tuple[Path, ...] = setting(
        ListOf(FilePath(must_exist=True)), (),
        "device/permission tables for what the package installs (owners, modes, nodes)",
    )
    file_lists: tuple[Path, ...] = setting(
        ListOf(FilePath(must_exist=True)), (), "gen_init_cpio file lists the package adds"
    )
    depends: tuple[str, ...] = setting(
        ListOf(NAME, unique=True), (),
        "target packages this one builds against (in its sysroot) and ships with",
    )
    host_tools: tuple[str, ...] = setting(
        ListOf(Str(r"[A-Za-z0-9][A-Za-z0-9+._-]*", "a command name"), unique=True), (),
        "commands the build runs on the host (checked on PATH before any build starts)",
    )
    kernel_options: tuple[str, ...] = setting(
        ListOf(KERNEL_OPTION, unique=True), (),
        "kernel config symbols the package needs at run time, as SYMBOL=value",
    )
    kernel_options_i386: tuple[str, ...] = setting(
        ListOf(KERNEL_OPTION, unique=True), (), "more kernel config symbols, for i386 only"
    )
    kernel_options_x86_64: tuple[str, ...] = setting(
        ListOf(KERNEL_OPTION, unique=True), (), "more kernel config symbols, for x86_64 only"
    )
    python_modules: tuple[str, ...] = setting(
        ListOf(Str(r"[A-Za-z_][A-Za-z0-9_.]*", "a module name"), unique=True), (),
        "standard library modules the package imports in ways a scan cannot see",
    )
    cflags: tuple[str, ...] = setting(ListOf(Str()), (), "C flags added to the toolchain's")
    ldflags: tuple[str, ...] = setting(ListOf(Str()), (), "linker flags added to the toolchain's")
    configure: tuple[str, ...] = setting(
        ListOf(ARGUMENT), (),
        "autotools: arguments of ./configure after --build, --host and --prefix=/usr",
    )
    configure_env: tuple[str, ...] = setting(
        ListOf(ASSIGNMENT), (), "autotools: VARIABLE=value set in ./configure's environment"
    )
    make: tuple[str, ...] = setting(
        ListOf(ARGUMENT), (), "make, autotools: arguments of every make call (VAR=value, -C dir)"
    )
    make_targets: tuple[str, ...] = setting(
        ListOf(ARGUMENT), (), "make, autotools: the build's make targets (default: make's own)"
    )
    install_targets: tuple[str, ...] = setting(
        ListOf(ARGUMENT), ("install",), "make, autotools: the install's make targets ([] for none)"
    )
    destdir_variable: str = setting(
        MAKE_VARIABLE, "DESTDIR", "make, autotools: the make variable install puts {{ destdir }} in"
    )
    toolchain_variables: ToolchainVariables = setting(
        Record(ToolchainVariables), ToolchainVariables(),
        "make: the make variables the compiler and flags are passed in",
    )
    build: tuple[str, ...] = setting(
        ListOf(TEMPLATE), (),
        "build commands (jinja2 templates); for make and autotools, run before make",
    )
    install: tuple[str, ...] = setting(
        ListOf(TEMPLATE), (),
        "install commands into {{ destdir }} (jinja2 templates); for make and autotools, run "
        "after the install targets",
    )
    strip: bool = setting(
        Flag(), True, "strip the ELF files the package installs (false keeps their symbols)"
    )
    debs: DebsByArch = setting(
        Record(DebsByArch), DebsByArch(), "deb: the Debian binary packages, per architecture"
    )
    origin: Origin | None = origin_field()

    def pins(self, arch: str) -> tuple[SourceSpec | Deb, ...]:
        """The pinned files the package is made from on ``arch``: its tarball or debs."""
        return (self.source,) if self.source else self.debs.for_arch(arch)

    @property
    def folder(self) -> Path:
        assert self.origin is not None
        return self.origin.path.parent


TEMPLATES = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)


# The recipe keys whose items are jinja2 templates of the build variables.
TEMPLATED = ("configure_env", "configure", "make", "make_targets", "install_targets", "build",
             "install")


def render_command(recipe: Recipe, key: str, index: int, variables: dict[str, object]) -> str:
    """Render one templated item (a command or an argument); a template error is the
    recipe's error."""
    text = getattr(recipe, key)[index]
    try:
        return TEMPLATES.from_string(text).render(variables)
    except jinja2.TemplateError as exc:
        assert recipe.origin is not None
        raise recipe.origin.error(
            f"{key}[{index}]", f"{key} {'command' if key in ('build', 'install') else 'item'} "
            f"{index + 1}: template error: {exc}; "
            f"variables: {', '.join(BUILD_VARIABLES)}",
        ) from None


def check_templates(recipe: Recipe) -> None:
    """Render every template with placeholder values so mistakes surface before any build."""
    placeholders = {name: f"<{name}>" for name in BUILD_VARIABLES}
    for key in TEMPLATED:
        for index in range(len(getattr(recipe, key))):
            render_command(recipe, key, index, placeholders)


def load_recipe(path: Path) -> Recipe:
    src = Source(path)
    recipe: Recipe = Record(Recipe).parse(with_version(compose(path), src), src)
    if recipe.name != path.parent.name:
        assert recipe.origin is not None
        raise recipe.origin.error(
            "name", f"name '{recipe.name}' differs from the recipe's folder '{path.parent.name}'"
        )
    check_templates(recipe)
    return recipe


def search_path(config: ImageConfig) -> list[Path]:
    return [*config.recipe_dirs, BUILTIN_RECIPES]


def recipe_folders(dirs: list[Path]) -> list[Path]:
    """Every recipe folder in ``dirs``; the first of each name wins, as in find_recipe."""
    found: dict[str, Path] = {}
    for folder in dirs:
        for path in sorted(folder.glob("*/recipe.yaml")):
            found.setdefault(path.parent.name, path.parent)
    return list(found.values())


def all_recipes(config: ImageConfig) -> list[Recipe]:
    """Every recipe on the config's search path."""
    return [load_recipe(folder / "recipe.yaml") for folder in recipe_folders(search_path(config))]


def find_recipe(name: str, dirs: list[Path]) -> Path | None:
    for folder in dirs:
        candidate = folder / name / "recipe.yaml"
        if candidate.is_file():
            return candidate
    return None


def shadowed(recipes: list[Recipe], config: ImageConfig) -> list[tuple[Path, Path]]:
    """(used, hidden) recipe files: a package two of the config's own recipe dirs define
    differently (the first wins)."""
    found = []
    for recipe in recipes:
        used = recipe.folder / "recipe.yaml"
        for folder in config.recipe_dirs:
            other = folder / recipe.name / "recipe.yaml"
            if (other.is_file() and other.resolve() != used.resolve()
                    and other.read_bytes() != used.read_bytes()):
                found.append((used, other))
    return found


def resolve(config: ImageConfig) -> list[Recipe]:
    """Load the config's packages and their dependencies, in build order."""
    dirs = search_path(config)
    recipes: dict[str, Recipe] = {}
    pending = [(name, config.origin, f"packages[{i}]") for i, name in enumerate(config.packages)]
    while pending:
        name, origin, key = pending.pop(0)
        if name in recipes:
            continue
        path = find_recipe(name, dirs)
        if path is None:
            assert origin is not None
            raise origin.error(
                key, f"no recipe for package '{name}' (searched: "
                f"{', '.join(str(d) for d in dirs)}); add {name}/recipe.yaml to a recipe dir",
            )
        recipe = recipes[name] = load_recipe(path)
        pending += [(dep, recipe.origin, f"depends[{i}]") for i, dep in enumerate(recipe.depends)]
    return build_order(recipes)


def build_order(recipes: dict[str, Recipe]) -> list[Recipe]:
    """Dependencies first; among packages ready together, by name; a cycle is an error."""
    sorter = graphlib.TopologicalSorter({n: r.depends for n, r in recipes.items()})
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        first = recipes[cycle[0]]
        assert first.origin is not None
        raise first.origin.error(
            "depends", "dependency cycle: " + " -> ".join(cycle) + "; remove one of these depends"
        ) from None
    order: list[Recipe] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        order += [recipes[n] for n in ready]
        sorter.done(*ready)
    return order


def generated(rel: Path) -> bool:
    """Whether a file of a recipe folder is made by tools rather than written: Python's
    byte code (pip compiles src/ when it installs khib-build), which never counts."""
    return "__pycache__" in rel.parts or rel.suffix in (".pyc", ".pyo")


def recipe_files(recipe: Recipe) -> dict[str, str]:
    """Every file of the recipe's folder (recipe.yaml, patches, files/, src/; nothing
    generated) with the sha256 of its contents; an executable file's name ends in
    " (executable)"."""
    found = {}
    for path in sorted(p for p in recipe.folder.rglob("*") if p.is_file()
                       and not generated(p.relative_to(recipe.folder))):
        rel = path.relative_to(recipe.folder).as_posix()
        executable = " (executable)" if os.access(path, os.X_OK) else ""
        found[rel + executable] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def package_facts(recipe: Recipe) -> dict[str, Any]:
    """What a package is, as plain data: the one source of the manifest's, show-info's
    and the SBOM's package entries."""
    source = recipe.source
    return {
        "name": recipe.name,
        "version": recipe.version,
        "license": recipe.license,
        "license_files": list(recipe.license_files),
        "kind": recipe.kind,
        "recipe": str(recipe.folder),
        "source": None if source is None else {
            "file": source.filename, "sha256": source.sha256, "urls": list(source.urls),
            "debian": None if source.debian is None else {
                "package": source.debian.package, "file": source.debian.file},
        },
        "local_source": str(recipe.folder / "src") if source is None else None,
        "patches": [str(p) for p in recipe.patches],
        "backports": {series: [str(p) for p in patches] for series, patches in recipe.backports},
        "depends": list(recipe.depends),
    }
