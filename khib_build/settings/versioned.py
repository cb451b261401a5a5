"""A recipe's version, written once: its ``source`` pins (URLs, file names) say
``{{ version }}`` where the version goes, and are rendered before they are checked.

``lint`` finds the pins that spell the version out instead (:func:`repeats`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import jinja2
import yaml

from khib_build.settings.kinds import Source

VERSIONED = "source"  # the recipe key whose strings may say {{ version }}
PINS = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
TEMPLATE = re.compile(r"\{\{.*?\}\}|\{%.*?%\}")


def top_value(node: yaml.Node, key: str) -> yaml.Node | None:
    """The value of ``key`` in a top-level mapping node, if there is one."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
                return value
    return None


def strings(node: yaml.Node, skip: tuple[str, ...] = ()) -> Iterator[yaml.ScalarNode]:
    """Every scalar below ``node``, but the values of the keys in ``skip``."""
    if isinstance(node, yaml.ScalarNode):
        yield node
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from strings(item, skip)
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if not (isinstance(key, yaml.ScalarNode) and key.value in skip):
                yield from strings(value, skip)


def with_version(node: yaml.Node, src: Source) -> yaml.Node:
    """``node`` (a recipe's top mapping) with the templates in its source pins rendered;
    a template error names the file and line."""
    source, version = top_value(node, VERSIONED), top_value(node, "version")
    if source is None:
        return node
    variables = {"version": version.value if isinstance(version, yaml.ScalarNode) else None}
    for scalar in strings(source):
        if "{{" in scalar.value or "{%" in scalar.value:
            try:
                scalar.value = PINS.from_string(scalar.value).render(variables)
            except jinja2.TemplateError as exc:
                raise src.error(scalar, f"template error in {VERSIONED}: {exc} (the "
                                "variable there is version)") from None
            scalar.tag = "tag:yaml.org,2002:str"
    return node


def repeats(node: yaml.Node) -> list[tuple[int, str]]:
    """(line, text) of each source pin that spells the recipe's version out: as a whole
    version (not inside a longer number), outside templates, digests and package names."""
    source, version = top_value(node, VERSIONED), top_value(node, "version")
    if source is None or not isinstance(version, yaml.ScalarNode) or not version.value:
        return []
    spelled = re.compile(rf"(?<![0-9.]){re.escape(version.value)}(?!\.?[0-9])")
    return [(s.start_mark.line + 1, s.value) for s in strings(source, skip=("sha256", "package"))
            if spelled.search(TEMPLATE.sub("", s.value))]
