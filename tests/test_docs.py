"""The format reference is generated from the declarations and must match them."""

from __future__ import annotations

from khib_build.reference import reference
from tests.conftest import REPO


def test_reference_is_current() -> None:
    assert (REPO / "docs" / "reference.md").read_text() == reference(), "run `make docs`"
