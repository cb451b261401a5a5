"""The format reference, README's options table and its layout follow the code."""

from __future__ import annotations

import re
import subprocess

from khib_build.reports.reference import reference, with_options_table
from tests.helpers import REPO


def test_reference_is_current() -> None:
    assert (REPO / "docs" / "reference.md").read_text() == reference(), "run `make docs`"


def test_readme_options_table_is_current() -> None:
    readme = (REPO / "README.md").read_text()
    assert "<!-- /options -->" in readme
    assert with_options_table(readme) == readme, "run `make docs`"


def test_readme_layout_lists_every_folder_once() -> None:
    """Each folder of the repo and of khib_build/ has its line in README's layout."""
    readme = (REPO / "README.md").read_text()
    layout = readme[readme.index("## Layout\n"):]
    layout = layout[:layout.find("\n## ", 5) if "\n## " in layout[5:] else None]
    listed = re.findall(r"^\s*- `([\w.-]+/|pipeline\.py)`", layout, re.M)
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.splitlines()
    tracked = {name.split("/")[0] + "/" for name in files
               if "/" in name and not name.startswith(".")}
    stages = {p.name + "/" for p in (REPO / "khib_build").iterdir()
              if p.is_dir() and p.name != "__pycache__"}
    assert sorted(listed) == sorted(tracked | stages | {"pipeline.py"})


def test_jump_docs_figures_are_the_benchmarks() -> None:
    """docs/jump.md quotes the figures bench/guest.py measured and wrote into
    bench/RESULTS.md, the same block in both."""
    def block(path: str) -> str:
        text = (REPO / path).read_text()
        return text[text.index("<!-- five-commands -->"):text.index("<!-- /five-commands -->")]

    assert block("docs/jump.md") == block("bench/RESULTS.md"), "run bench/guest.py"
    assert "| hibernate (to power-off) |" in block("docs/jump.md")
