"""reprotest, Debian's reproducibility tool, builds an image twice, a control build in a
fixed environment and an experiment varying it, and diffoscope compares the images.

Varied (tests/reprotesting.py, VARIED): environment (an extra variable), build_path (the
copied configs, recipes and overlays, and the output dir, elsewhere), kernel (setarch:
another personality, uname -r 2.6.x), aslr, num_cpus (1 CPU, then 2), time (faketime:
the clock 400 days ahead), fileordering (disorderfs: each directory listing in another
order), domain_host (host and domain name, in a UTS namespace), home (/nonexistent),
locales (et_EE.UTF-8), exec_path, timezone (GMT+12, then GMT-14), umask (0022, then
0002); and the user: reprotest's user_group is left out (LEFT_OUT: its sudo call is one
Debian 12's sudo refuses), so the experiment runs as nobody:nogroup in a user namespace
(BUILD_USER). Each build notes what it saw as it started (tests/data/reprotest/build.sh:
its user, the clock, the order of a directory's entries), and the tests check that the
user, the clock and the order varied.

What each build of a run does, in a fresh output dir: `khib-build rebuild` of the test
recipes named (tests/data/reprotest/recipes), so that they are compiled in each build,
and the image made; the default image's six packages (busybox, kexec-tools, lz4,
python3, khib-core, khib-tools) come from the shared build cache, where the session's
default image of that arch put them. So under the variations: repro-hello compiled
(a small C program: two objects, -g, unstripped) and the whole image made: the
packages' trees and the overlays laid over one another, the Python standard library
pruned and byte-compiled by the image's own python3, the ELF and import checks, the
cpio packed and gzipped, the manifest. Every package compiled under the variations:
test_reproducible.py.

The reports (reprotest's log, SHA256SUMS, diffoscope's text, HTML and JSON) stay in the
test's tmp dir and are copied to $KHIB_ARTIFACTS/reprotest/RUN, else
output/reprotest/RUN (RUN: i386, x86_64, noise).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import assert_ok, khib, khib_argv
from tests.reprotesting import (
    AHEAD_DAYS,
    DEFAULT_PACKAGES,
    LEFT_OUT,
    VARIED,
    assert_varied,
    reprotest,
)

NOISE = "usr/share/repro-noise/stamp"
IMAGE_FIXTURES = {"i386": "default_image", "x86_64": "image_x86_64"}


def rebuilt(config: str, *packages: str) -> list[str]:
    """The build command: the image of reprotest/CONFIG with PACKAGES compiled again."""
    return khib_argv("rebuild", "-c", f"reprotest/{config}", "-o", "out", *packages)


def test_each_variation_is_applied_or_left_out_with_a_reason() -> None:
    """Every variation this reprotest knows is in VARIED or LEFT_OUT, none in both."""
    names = subprocess.run(
        ["/usr/bin/python3", "-c",
         "from reprotest.build import VariationSpec; print(*VariationSpec.all_names())"],
        capture_output=True, text=True, check=True).stdout.split()
    assert sorted(VARIED + tuple(LEFT_OUT)) == sorted(names)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["i386", "x86_64"])
def test_reprotest_finds_no_difference(arch: str, request: pytest.FixtureRequest,
                                       tmp_path: Path) -> None:
    """The image with repro-hello, built twice under the variations: the same bytes."""
    request.getfixturevalue(IMAGE_FIXTURES[arch])  # its packages are in the cache
    run = reprotest(arch, tmp_path, rebuilt(f"{arch}.yaml", "repro-hello"))
    assert run.returncode == 0, run.explained()
    assert "Reproduction successful" in run.log
    assert_varied(run)
    # What each of the two builds did.
    assert run.statuses() == {("repro-hello", "built"): 2,
                              **{(name, "cached"): 2 for name in DEFAULT_PACKAGES}}, run.log
    # The C program runs, naming its source by the mapped path, dated SOURCE_DATE_EPOCH.
    image = run.store / "control" / "source-root" / "out" / "rootfs.gz"
    assert_ok(khib("extract", image, tmp_path / "tree"))
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    printed = subprocess.run([tmp_path / "tree" / "usr" / "bin" / "repro-hello"],
                             capture_output=True, text=True, check=True).stdout
    assert printed == (f"built from /usr/src/repro-hello-1/hello.c on "
                       f"{time.strftime('%b %e %Y %H:%M:%S', time.gmtime(epoch))}\n")


def differing(node: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """What differs, by diffoscope's JSON report: the path of each of its leaves (each
    node's source1: a file, an archive member, or a view such as "Pretty-printed")."""
    path = (*path, node["source1"])
    if not node.get("details"):
        return [path]
    return [leaf for child in node["details"] for leaf in differing(child, path)]


@pytest.mark.slow
def test_reprotest_names_the_file_that_differs(default_image: Path, tmp_path: Path) -> None:
    """repro-noise writes the time and random bytes into a file: reprotest fails, and
    diffoscope's report names that file inside rootfs.gz's cpio, and nothing else."""
    run = reprotest("noise", tmp_path, rebuilt("noise.yaml", "repro-noise"))
    assert run.returncode == 1, run.explained()
    assert_varied(run)
    assert run.statuses() == {("repro-noise", "built"): 2,
                              **{(name, "cached"): 2 for name in DEFAULT_PACKAGES}}, run.log
    for suffix in ("out", "html"):
        assert NOISE in run.report(suffix).read_text(), suffix
    # In the image, only the noise differs: the rootfs.gz member "rootfs" (its cpio)
    # holds one differing member; the manifest differs in the image's sha256.
    leaves = differing(json.loads(run.report("json").read_text()))
    in_image = [leaf[at + 1:] for leaf in leaves for at, part in enumerate(leaf)
                if part.endswith("/out/rootfs.gz")]
    assert in_image == [("rootfs", NOISE)], leaves
    # The experiment's faked clock reached the recipe's own commands, through khib-build:
    # its stamp is AHEAD_DAYS after the control's.
    stamps = {}
    for build in ("control", "experiment-1"):
        image = run.store / build / "source-root" / "out" / "rootfs.gz"
        assert_ok(khib("extract", image, tmp_path / build))
        stamps[build] = float((tmp_path / build / NOISE).read_text().split()[0])
    ahead = stamps["experiment-1"] - stamps["control"] - AHEAD_DAYS * 86400
    assert 0 <= ahead <= run.ended - run.started, stamps
