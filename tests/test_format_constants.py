"""The image format has one source, khib-core's khib-format.h: every KHIB_ define there
has the same value in the khib tools' khib_tools/format.py, and the tests' helpers take
theirs from that module."""

from __future__ import annotations

import ast
import re

from tests.helpers import REPO, fmt

HEADER = REPO / "recipes" / "khib-core" / "src" / "khib-format.h"
DEFINE = re.compile(r"^#define KHIB_(\w+) (.+?)(?:\s*/\*.*)?$", re.MULTILINE)


def c_value(text: str) -> object:
    """A define's value as Python sees it: a number (u suffix, shifts) or a string."""
    text = text.strip()
    if text.startswith('"'):
        return ast.literal_eval(text).encode("latin-1")
    return eval(re.sub(r"(?<=[0-9a-fx])u\b", "", text), {})


def test_every_define_has_its_twin() -> None:
    defines = {name: c_value(value) for name, value in DEFINE.findall(HEADER.read_text())
               if not name.endswith("_H")}
    assert len(defines) > 30
    wrong = {name: (value, getattr(fmt, name, None)) for name, value in defines.items()
             if getattr(fmt, name, None) != value}
    assert not wrong, wrong


def test_the_kinds_follow_the_enum() -> None:
    enum = re.search(r"enum khib_kind \{ ([^}]*) \}", HEADER.read_text())
    assert enum
    assert tuple(n.strip().removeprefix("KHIB_").lower() for n in enum[1].split(",")) == \
        fmt.KINDS
