"""size-report: every entry of the image with the package that put it there, per-package
totals, and a chart of the breakdown next to the image.

An entry's size is its whole cpio record (header, name, data, padding), so the totals add
up to the image's uncompressed size exactly; the archive's trailer is a line of its own.
A package's share of the compressed image is estimated by compressing its files' data
alone (zlib, level 9) and dividing the image's real compressed size in proportion.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from khib_build.image import newc
from khib_build.image.segments import segments

TRAILER = "(cpio trailer)"
UNCLAIMED = "(unclaimed)"


@dataclass(frozen=True)
class Member:
    path: str
    owner: str
    size: int  # bytes of the cpio record
    data: int  # bytes of file data


@dataclass(frozen=True)
class Total:
    owner: str
    files: int
    size: int
    compressed: int  # estimated share of the compressed image


def owner_of(path: str, owners: dict[str, str], tables: set[str]) -> str:
    """Who put ``path`` there; a compiled module counts for the package of its source."""
    if path in owners:
        return owners[path]
    if path.endswith(".pyc") and path[:-1] in owners:
        return owners[path[:-1]]
    return "(device table)" if path in tables else UNCLAIMED


def members(cpio: Path, owners: dict[str, str], tables: set[str],
            contents: dict[str, list[bytes]]) -> list[Member]:
    """The records of one plain newc archive; each file's data goes into ``contents``."""
    found = []
    data = cpio.read_bytes()
    at = 0
    while at < len(data):
        try:
            header = newc.read_header(data[at:at + newc.HEADER_SIZE])
        except newc.NewcError as exc:
            raise newc.NewcError(f"at byte {at} of its cpio: {exc}") from None
        start = at + newc.HEADER_SIZE
        name = data[start:start + header.name_span]
        body = start + header.name_span
        end = body + header.data_span
        if newc.is_trailer(header, name):
            found.append(Member(newc.TRAILER.decode(), TRAILER, len(data) - at, 0))
            break
        path = name[:header.namesize - 1].decode("utf-8", "replace")
        path = path.removeprefix("./").lstrip("/")
        owner = owner_of(path, owners, tables)
        found.append(Member(path, owner, end - at, header.filesize))
        contents[owner].append(data[body:body + header.filesize])
        at = end
    return found


def breakdown(image: Path, owners: dict[str, str], tables: set[str]) -> dict[str, Any]:
    contents: dict[str, list[bytes]] = defaultdict(list)
    entries: list[Member] = []
    for number, segment in enumerate(segments(image), 1):
        try:
            entries += members(segment.cpio, owners, tables, contents)
        except newc.NewcError as exc:
            raise newc.NewcError(f"{image}: segment {number}, {exc}") from None
    weights = {owner: len(zlib.compress(b"".join(parts), 9)) for owner, parts in contents.items()}
    scale = image.stat().st_size / max(1, sum(weights.values()))
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for entry in entries:
        totals[entry.owner][0] += 1
        totals[entry.owner][1] += entry.size
    rows = sorted((Total(owner, files, size, round(weights.get(owner, 0) * scale))
                   for owner, (files, size) in totals.items()), key=lambda t: -t.size)
    return {
        "image": str(image),
        "compressed_size": image.stat().st_size,
        "uncompressed_size": sum(e.size for e in entries),
        "packages": [asdict(t) for t in rows],
        "files": [asdict(e) for e in entries],
    }


def draw(found: dict[str, Any], chart: BinaryIO) -> None:
    """A bar chart, uncompressed and compressed, per package (SVG, reproducible)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    matplotlib.rcParams["svg.hashsalt"] = "khib-build"
    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: smaller, searchable
    rows = found["packages"]
    names = [r["owner"] for r in rows]
    figure, axes = pyplot.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    positions = range(len(rows))
    axes.barh([p + 0.2 for p in positions], [r["size"] / 2**20 for r in rows], 0.4,
              label="uncompressed")
    axes.barh([p - 0.2 for p in positions], [r["compressed"] / 2**20 for r in rows], 0.4,
              label="share of the compressed image")
    axes.set_yticks(list(positions), names)
    axes.invert_yaxis()
    axes.set_xlabel("MiB")
    axes.set_title(f"{Path(found['image']).name}: {found['compressed_size'] / 2**20:.2f} MiB, "
                   f"{found['uncompressed_size'] / 2**20:.2f} MiB unpacked")
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(chart, format="svg", metadata={"Date": None})
    pyplot.close(figure)
