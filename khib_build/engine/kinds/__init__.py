"""Recipe kinds, one module each (as Buildroot keeps one file per package
infrastructure): the keys a kind's recipes take, what they must have, and the steps that
build a package of the kind.

A recipe names its kind (``kind: make``); :func:`check` holds it to its kind before
anything is built, and :class:`~khib_build.engine.build.Builder` runs the kind's steps.
The kernel is a kind too: its recipe sets the kernel's options and patches and is built
by ``khib-build kernel``, never as a package of an image.
"""

from __future__ import annotations

from khib_build.engine.kinds import autotools, commands, deb, kernel, make, python
from khib_build.engine.kinds.base import Kind
from khib_build.settings.kinds import suggest
from khib_build.settings.recipes import KERNEL_RECIPE, Recipe

KINDS: dict[str, Kind] = {k.name: k for k in (commands.KIND, make.KIND, autotools.KIND,
                                              python.KIND, deb.KIND, kernel.KIND)}
SPECIFIC = frozenset().union(*(k.keys for k in KINDS.values()))  # keys only some kinds take


def kind_of(recipe: Recipe) -> Kind:
    return KINDS[recipe.kind]


def check(recipe: Recipe) -> Kind:
    """The recipe's kind, once the recipe is held to it: a known kind, only the keys it
    takes, what it needs; the kernel's recipe (``linux``) of kind kernel. Errors name
    the file and line. (Whether an image may list it is the image's question.)"""
    assert recipe.origin is not None
    found = KINDS.get(recipe.kind)
    if found is None:
        raise recipe.origin.error("kind", f"expected one of {', '.join(KINDS)}, got "
                                  f"{recipe.kind!r}{suggest(recipe.kind, list(KINDS))}")
    for key in recipe.origin.lines:
        if key in SPECIFIC and key not in found.keys:
            takes = sorted(name for name, k in KINDS.items() if key in k.keys)
            raise recipe.origin.error(key, f"{key} is for kind {' or '.join(takes)}, not "
                                      f"{recipe.kind}")
    if recipe.name == KERNEL_RECIPE and found.package:
        raise recipe.origin.error("kind", f"{recipe.name} is the kernel's recipe: give it "
                                  f"kind: {kernel.KIND.name}")
    found.check(recipe)
    return found
