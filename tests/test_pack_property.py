"""Property: any tree of legal entries comes back exactly from GNU cpio, bsdtar and inspect."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from khib_build.image.cpio import pack_tree
from khib_build.image.listing import final_tree, read_image
from tests.helpers import describe

# Any character a Linux name may hold, but for the backslash: bsdtar strips it from the
# start of a name when extracting (a file named "\\" would come back as "."), and GNU
# cpio's listing is line-based, hence no newlines.
NAME_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0\n\r\\")
# bsdtar, one of the reference readers, strips what looks like a drive letter ("A:") from
# the start of a member's name: such names would test bsdtar, not the packer.
NAMES = st.text(NAME_CHARS, min_size=1, max_size=20).filter(
    lambda n: n not in (".", "..") and not (len(n) > 1 and n[1] == ":" and n[0].isascii()
                                            and n[0].isalpha()))
MODES = st.sampled_from([0o644, 0o600, 0o755, 0o4755, 0o2755, 0o1777, 0o444, 0o700])

ENTRY = st.one_of(
    st.tuples(st.just("file"), st.binary(max_size=3000), MODES),
    st.tuples(st.just("empty"), st.just(b""), MODES),
    st.tuples(st.just("link"), NAMES, st.just(0o777)),
    st.tuples(st.just("fifo"), st.just(b""), MODES),
    st.tuples(st.just("hard"), st.binary(min_size=1, max_size=500), MODES),
)
TREE = st.recursive(
    st.dictionaries(NAMES, ENTRY, max_size=5),
    lambda children: st.dictionaries(NAMES, st.one_of(ENTRY, children), max_size=4),
    max_leaves=20,
)


def build(folder: Path, spec: dict, links: list[Path]) -> None:
    for name, item in spec.items():
        path = folder / name
        if isinstance(item, dict):
            path.mkdir()
            build(path, item, links)
            os.chmod(path, 0o755)
            continue
        kind, payload, mode = item
        if kind in ("file", "empty", "hard"):
            path.write_bytes(payload)
            os.chmod(path, mode)
            if kind == "hard":
                links.append(path)
        elif kind == "link":
            path.symlink_to(payload)
        else:
            os.mkfifo(path)
            os.chmod(path, mode)


def make(root: Path, spec: dict) -> None:
    links: list[Path] = []
    build(root, spec, links)
    for path in links:  # a second name for each "hard" file, beside it
        second = path.with_name(path.name + ".hl")
        if not second.exists() and not second.is_symlink():
            os.link(path, second)


@pytest.mark.skipif(os.geteuid() != 0, reason="extracting setuid files exactly needs root")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TREE)
def test_random_trees_round_trip(spec: dict) -> None:
    work = Path(tempfile.mkdtemp(prefix="khib-prop-"))
    try:
        tree = work / "tree"
        tree.mkdir()
        make(tree, spec)
        image = work / "image.cpio"
        pack_tree(tree, {}, image, "none", None, epoch=0)
        want = describe(tree)
        for tool, out in (("gnu", work / "gnu"), ("bsd", work / "bsd")):
            out.mkdir()
            if tool == "gnu":
                with image.open("rb") as stdin:
                    subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"],
                                   cwd=out, stdin=stdin, check=True)
            else:
                subprocess.run(["bsdtar", "-xpf", str(image), "-C", str(out)], check=True)
            assert describe(out) == want, tool
        listed = final_tree(read_image(image))
        assert set(listed) == set(want)
        for path, row in listed.items():
            st_ = (tree / path).lstat()
            assert row.mode == (st_.st_mode if not stat.S_ISLNK(st_.st_mode)
                                else stat.S_IFLNK | 0o777), path
            if stat.S_ISREG(st_.st_mode):
                assert row.size == st_.st_size, path
    finally:
        shutil.rmtree(work)
