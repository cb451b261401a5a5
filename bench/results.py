"""bench/RESULTS.md (and the docs that quote it): each benchmark writes its figures
between markers of its own, in place of the last run's."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_block(name: str, block: str, path: Path = RESULTS) -> None:
    """``block`` between ``<!-- name -->`` and ``<!-- /name -->`` in ``path``, in place of
    what was between them (appended at the end of the file the first time)."""
    begin, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    text, marked = path.read_text(), f"{begin}\n{block}\n{end}"
    if begin in text:
        text = text[:text.index(begin)] + marked + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + marked + "\n"
    path.write_text(text)
