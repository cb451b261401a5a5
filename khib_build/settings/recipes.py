"""Recipes: one folder per package, ``recipes/<name>/recipe.yaml``, found and ordered."""

from __future__ import annotations

import graphlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from khib_build.settings.config import KERNEL_OPTION, NAME, URL, ImageConfig
from khib_build.settings.kinds import Choice, FilePath, Int, ListOf, Optional, Str
from khib_build.settings.paths import data_dir
from khib_build.settings.schema import Origin, Record, load, origin_field, setting

DEFAULT_EXPANSION = 20  # a kernel source .tar.xz unpacks to about 9 times its size
BUILTIN_RECIPES = data_dir("recipes")
KERNEL_RECIPE = "linux"  # the kernel's recipe: not a package, read by kconfig and kernel
PYTHON_RECIPE = "python3"  # the interpreter python packages run on
SHA256 = Str(r"[0-9a-f]{64}", "a sha256 of 64 lower-case hex digits", verbatim=True)
FILE_NAME = Str(r"[A-Za-z0-9][A-Za-z0-9+._~-]*", "a plain file name")
TEMPLATE = Str(expected="a command string")

# The variables a build or install command may use, each with its meaning.
BUILD_VARIABLES = {
    "name": "the package name",
    "version": "the package version",
    "arch": "the target architecture (i386 or x86_64)",
    "target": "the target GNU triplet (i686-linux-gnu or x86_64-linux-gnu)",
    "cc": "the target compiler command, with its fixed arguments (e.g. gcc -m32)",
    "cflags": "C compiler flags, reproducibility flags included",
    "ldflags": "linker flags",
    "jobs": "the run's job budget, for tools other than make (make shares it by itself)",
    "srcdir": "the unpacked source (the working directory of each command)",
    "destdir": "the package's staging tree: install here, as if it were /",
    "sysroot": "the C library plus the dependencies' staging trees ({{ cc }} points there)",
    "files": "the recipe's files/ folder",
    "source_date_epoch": "the timestamp to stamp into build outputs",
}


@dataclass(frozen=True, kw_only=True)
class DebianSource:
    """The distribution source package that carries the same upstream tarball."""

    package: str = setting(NAME, help="source package name, as `apt-get source` takes it")
    file: str = setting(FILE_NAME, help="the .orig tarball's file name in that package")


@dataclass(frozen=True, kw_only=True)
class SourceSpec:
    """A pinned upstream tarball."""

    urls: tuple[str, ...] = setting(ListOf(URL, min_items=1), help="upstream URLs, tried in order")
    sha256: str = setting(SHA256, help="sha256 of the tarball")
    file: str | None = setting(
        Optional(FILE_NAME), None, "file name in the download dir (default: the URL's last part)"
    )
    debian: DebianSource | None = setting(
        Optional(Record(DebianSource)), None, "Debian source package holding the same bytes"
    )

    @property
    def filename(self) -> str:
        return self.file or self.urls[0].rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """How one package is fetched, built and installed."""

    name: str = setting(NAME, help="package name, the same as the recipe's folder")
    version: str = setting(Str(verbatim=True), help="upstream version")
    license: str = setting(Str(), help="SPDX license expression")
    kind: str = setting(
        Choice(("commands", "python")), "commands",
        "commands: build and install run the recipe's commands; python: a pure-Python "
        "package (its src/ or source) installed by khib-build with its console scripts",
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
        ListOf(FilePath(must_exist=True)), (), "patches applied with patch -p1, in order"
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
    build: tuple[str, ...] = setting(ListOf(TEMPLATE), (), "build commands (jinja2 templates)")
    install: tuple[str, ...] = setting(
        ListOf(TEMPLATE), (), "install commands into {{ destdir }} (jinja2 templates)"
    )
    origin: Origin | None = origin_field()

    @property
    def folder(self) -> Path:
        assert self.origin is not None
        return self.origin.path.parent


TEMPLATES = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)


def render_command(recipe: Recipe, step: str, index: int, variables: dict[str, object]) -> str:
    """Render one build or install command; a template error is the recipe's error."""
    text = getattr(recipe, step)[index]
    try:
        return TEMPLATES.from_string(text).render(variables)
    except jinja2.TemplateError as exc:
        assert recipe.origin is not None
        raise recipe.origin.error(
            f"{step}[{index}]", f"{step} command {index + 1}: template error: {exc}; "
            f"variables: {', '.join(BUILD_VARIABLES)}",
        ) from None


def check_templates(recipe: Recipe) -> None:
    """Render every command with placeholder values so mistakes surface before any build."""
    placeholders = {name: f"<{name}>" for name in BUILD_VARIABLES}
    for step in ("build", "install"):
        for index in range(len(getattr(recipe, step))):
            render_command(recipe, step, index, placeholders)


def load_recipe(path: Path) -> Recipe:
    recipe: Recipe = load(path, Recipe)
    if recipe.name != path.parent.name:
        assert recipe.origin is not None
        raise recipe.origin.error(
            "name", f"name '{recipe.name}' differs from the recipe's folder '{path.parent.name}'"
        )
    check_templates(recipe)
    if recipe.kind == "python" and PYTHON_RECIPE not in recipe.depends:
        assert recipe.origin is not None
        raise recipe.origin.error("kind", f"a python package runs on the image's interpreter:"
                                  f" add {PYTHON_RECIPE} to its depends")
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


def recipe_files(recipe: Recipe) -> dict[str, str]:
    """Every file of the recipe's folder (recipe.yaml, patches, files/, src/) with the
    sha256 of its contents; an executable file's name ends in " (executable)"."""
    found = {}
    for path in sorted(p for p in recipe.folder.rglob("*") if p.is_file()):
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
        "depends": list(recipe.depends),
    }
