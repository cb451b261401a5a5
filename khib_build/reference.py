"""The format reference (docs/reference.md), generated from the settings declarations."""

from __future__ import annotations

from khib_build.config import ImageConfig, Toolchain
from khib_build.recipes import BUILD_VARIABLES, DebianSource, Recipe, SourceSpec
from khib_build.schema import document


def reference() -> str:
    variables = "\n".join(f"| `{{{{ {name} }}}}` | {meaning} |"
                          for name, meaning in BUILD_VARIABLES.items())
    return f"""\
# khib-build file formats: reference

Generated from the declarations in `khib_build/config.py` and `khib_build/recipes.py`
(`make docs`); a test keeps it current. See `docs/formats.md` for a guided tour.

## Image config (`configs/*.yaml`)

{document(ImageConfig)}

### `toolchain`

{document(Toolchain)}

## Recipe (`recipes/<name>/recipe.yaml`)

{document(Recipe)}

### `source`

{document(SourceSpec)}

### `source.debian`

{document(DebianSource)}

## Variables of build and install commands

| variable | meaning |
|---|---|
{variables}
"""


if __name__ == "__main__":
    print(reference(), end="")
