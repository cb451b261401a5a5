"""The package graph of an image, as text or as Graphviz DOT."""

from __future__ import annotations

import json

from khib_build.settings.recipes import Recipe


def as_text(recipes: list[Recipe]) -> str:
    """One line per package in build order, with what it needs."""
    lines = []
    for recipe in recipes:
        needs = []
        if recipe.depends:
            needs.append("depends on " + ", ".join(recipe.depends))
        if recipe.host_tools:
            needs.append("host tools " + ", ".join(recipe.host_tools))
        lines.append(f"{recipe.name} {recipe.version}" + (f": {'; '.join(needs)}" if needs
                                                          else ""))
    return "\n".join(lines) + "\n"


def as_dot(recipes: list[Recipe], image: str) -> str:
    """Packages as boxes, the image as the root, host tools as dashed ellipses."""
    def quoted(text: str) -> str:
        return json.dumps(text)  # a DOT string is quoted and escaped as JSON's is

    lines = [f"digraph {quoted(image)} {{", "  rankdir=LR;",
             f"  {quoted('image ' + image)} [shape=doubleoctagon];"]
    wanted_by_image = set(r.name for r in recipes) - {d for r in recipes for d in r.depends}
    for recipe in recipes:
        node = quoted(recipe.name)
        lines.append(f"  {node} [shape=box, label={quoted(recipe.name + ' ' + recipe.version)}];")
        if recipe.name in wanted_by_image:
            lines.append(f"  {quoted('image ' + image)} -> {node};")
        lines += [f"  {node} -> {quoted(dep)};" for dep in recipe.depends]
        lines += [f"  {node} -> {quoted('host:' + tool)} [style=dashed];"
                  for tool in recipe.host_tools]
    tools = sorted({t for r in recipes for t in r.host_tools})
    lines += [f"  {quoted('host:' + t)} [shape=ellipse, style=dashed, label={quoted(t)}];"
              for t in tools]
    return "\n".join([*lines, "}"]) + "\n"
