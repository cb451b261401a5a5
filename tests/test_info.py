"""Machine-readable output for packagers and pipelines: show-info, legal-info, size-report."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
import pty
import re
import subprocess
import tarfile
from pathlib import Path

import jsonschema
import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from khib_build.engine.kinds import KINDS
from khib_build.fsutil import sha256_of
from khib_build.kernel.patches import kernel_patches
from khib_build.settings.recipes import load_recipe
from tests.helpers import (
    DEFAULT_CONFIG,
    KERNEL_TARBALL,
    REPO,
    assert_ok,
    khib,
    khib_argv,
    user_download_dir,
    write_recipe,
)

pytestmark = pytest.mark.slow  # they build and read the default image


@pytest.fixture(scope="module")
def own_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default image in an output dir of this module's own: these tests write there
    (legal-info, size-report, a rebuild), which the run's shared image dir must not get."""
    outdir = tmp_path_factory.mktemp("info-image")
    assert_ok(khib("rootfs", "-c", DEFAULT_CONFIG, "-o", outdir))
    return outdir / "rootfs.gz"


def test_show_info_json_follows_its_schema(own_image: Path) -> None:
    result = khib("show-info", "-c", DEFAULT_CONFIG, "-o", own_image.parent, "--json")
    assert_ok(result)
    found = json.loads(result.stdout)
    schema = json.loads((REPO / "docs" / "show-info.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$defs"]["package"]["properties"]["kind"]["enum"] == list(KINDS)
    jsonschema.validate(found, schema, cls=jsonschema.Draft202012Validator)
    packages = {p["name"]: p for p in found["packages"]}
    assert list(packages) == found["image"]["packages"]  # build order, here as configured
    assert {p["cache_status"] for p in packages.values()} == {"up to date"}
    manifest = json.loads((own_image.parent / "manifest.json").read_text())
    assert {p["name"]: p["cache_key"] for p in manifest["packages"]} == {
        name: p["cache_key"] for name, p in packages.items()}
    assert packages["busybox"]["source"]["sha256"] == manifest["packages"][0]["source"]["sha256"]
    assert found["kernel"]["patches"][0].endswith(".patch")
    assert "python3" in packages["khib-tools"]["depends"]


def test_legal_info_writes_valid_sboms_and_the_license_texts(
        own_image: Path, tmp_path: Path) -> None:
    outdir = own_image.parent
    assert_ok(khib("legal-info", "-c", DEFAULT_CONFIG, "-o", outdir))
    folder = outdir / "legal-info"
    document = parse_file(str(folder / "sbom.spdx.json"))
    assert validate_full_spdx_document(document) == []
    cyclonedx = (folder / "sbom.cdx.json").read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(cyclonedx) is None
    raw = json.loads((folder / "sbom.spdx.json").read_text())
    by_name = {p["name"]: p for p in raw["packages"]}
    assert by_name["python3"]["licenseDeclared"] == "PSF-2.0"
    assert by_name["busybox"]["checksums"][0]["checksumValue"].startswith("faeeb244")
    image_sha = json.loads((outdir / "manifest.json").read_text())["image"]["sha256"]
    assert by_name["khib-i386"]["checksums"][0]["checksumValue"] == image_sha
    contains = {(r["spdxElementId"], r["relationshipType"], r["relatedSpdxElement"])
                for r in raw["relationships"]}
    assert ("SPDXRef-Image", "CONTAINS", "SPDXRef-Package-kexec-tools") in contains
    assert ("SPDXRef-Package-khib-tools", "DEPENDS_ON", "SPDXRef-Package-python3") in contains
    licenses = folder / "licenses"
    assert b"GNU GENERAL PUBLIC LICENSE" in (licenses / "busybox" / "LICENSE").read_bytes()
    assert b"PYTHON SOFTWARE FOUNDATION" in (licenses / "python3" / "LICENSE").read_bytes()
    assert (licenses / "khib-core" / "COPYING").read_bytes() == (
        REPO / "recipes" / "khib-core" / "src" / "COPYING").read_bytes()
    # The kernel too: its license, its patches and its source, with the rest in sources/.
    assert b"GPL-2.0 WITH Linux-syscall-note" in (licenses / "linux" / "COPYING").read_bytes()
    assert b"GNU GENERAL PUBLIC LICENSE" in (
        licenses / "linux" / "LICENSES" / "preferred" / "GPL-2.0").read_bytes()
    # The patches this kernel gets: 6.1's backports, then khib's own (role b).
    recipe = load_recipe(REPO / "recipes" / "linux" / "recipe.yaml")
    linux = sorted(p.name for p in kernel_patches(recipe, "6.1", "b"))
    assert len(linux) == 4
    assert sorted(p.name for p in (folder / "patches" / "linux").iterdir()) == linux
    rows = {row["PACKAGE"]: row for row in csv.DictReader(
        (folder / "manifest.csv").read_text().splitlines())}
    assert list(rows) == ["busybox", "kexec-tools", "lz4", "python3", "khib-core",
                          "khib-tools", "linux"]
    # The kernel by the release its tree names (6.1.x), in the manifest, sources/ and both
    # SBOMs.
    release = rows["linux"]["VERSION"]
    assert release.startswith("6.1.")
    sources = folder / "sources"
    assert sorted(p.name for p in (sources / f"linux-{release}").iterdir()) == sorted(
        [KERNEL_TARBALL.name, *linux])
    assert rows["linux"]["SOURCE SHA256"] == sha256_of(KERNEL_TARBALL)
    assert rows["linux"]["SOURCE SITE"].startswith("linux-source-6.1 6.1.")
    bom = json.loads(cyclonedx)
    assert bom["metadata"]["component"]["hashes"][0]["content"] == image_sha
    components = {c["name"]: c for c in bom["components"]}
    assert list(components) == list(rows)
    assert components["linux"]["version"] == by_name["linux"]["versionInfo"] == release
    assert components["linux"]["hashes"][0]["content"] == sha256_of(KERNEL_TARBALL)
    assert components["linux"]["purl"] == f"pkg:generic/linux@{release}"
    busybox = sources / "busybox-1.35.0" / "busybox-1.35.0.tar.bz2"
    assert sha256_of(busybox) == rows["busybox"]["SOURCE SHA256"] == by_name["busybox"][
        "checksums"][0]["checksumValue"] == components["busybox"]["hashes"][0]["content"]
    # A package of its own src/: the tarball sources/ ships of it is what the SBOMs hash.
    own = sources / "khib-core-0.1" / "khib-core-0.1.tar.gz"
    with tarfile.open(own) as tar:
        assert "khib-core-0.1/khib-core.c" in tar.getnames()
    assert sha256_of(own) == rows["khib-core"]["SOURCE SHA256"] == components["khib-core"][
        "hashes"][0]["content"]
    assert components["khib-core"]["purl"] == "pkg:generic/khib-core@0.1"
    # Deterministic: a second run writes the same documents.
    first = [(folder / name).read_bytes() for name in ("sbom.spdx.json", "sbom.cdx.json")]
    assert_ok(khib("legal-info", "-c", DEFAULT_CONFIG, "-o", outdir))
    assert [(folder / name).read_bytes() for name in ("sbom.spdx.json", "sbom.cdx.json")
            ] == first


def test_size_report_accounts_for_every_byte_of_the_image(own_image: Path) -> None:
    outdir = own_image.parent
    result = khib("size-report", "-c", DEFAULT_CONFIG, "-o", outdir, "--json", "--files")
    assert_ok(result)
    found = json.loads(result.stdout)
    unpacked = len(gzip.decompress(own_image.read_bytes()))
    assert found["uncompressed_size"] == unpacked
    assert sum(p["size"] for p in found["packages"]) == unpacked
    assert sum(f["size"] for f in found["files"]) == unpacked
    assert found["compressed_size"] == own_image.stat().st_size
    assert abs(sum(p["compressed"] for p in found["packages"]) - found["compressed_size"]) < 16
    owners = {f["path"]: f["owner"] for f in found["files"]}
    assert owners["usr/sbin/kexec"] == "kexec-tools"
    assert owners["usr/sbin/khib-save"] == "khib-core"
    assert owners["usr/bin/python3"] == "python3"
    assert owners["usr/lib/python3.11/argparse.pyc"] == "python3"  # compiled from its source
    assert owners["init"] == "overlay"
    assert owners["dev/console"] == "(device table)"
    assert "(unclaimed)" in {f["owner"] for f in found["files"]}  # listed as such
    chart = outdir / "size-report.svg"
    assert chart.read_bytes().startswith(b"<?xml") and b"python3" in chart.read_bytes()


def test_rootfs_piped_prints_no_escape_codes(own_image: Path) -> None:
    """Output to a pipe (as in CI logs) is plain lines: no colour, no cursor movement."""
    for args in ((), ("--json",)):
        result = khib("rootfs", "-c", DEFAULT_CONFIG, "-o", own_image.parent, *args)
        assert_ok(result)
        assert "\x1b" not in result.stdout + result.stderr and "\r" not in result.stderr
    assert json.loads(result.stdout)["sha256"]  # --json: one summary object


def run_in_terminal(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run ``argv`` with a pseudo-terminal as its standard output and error."""
    output = bytearray()
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec, never return into pytest
        os.chdir(REPO)
        os.execve(argv[0], argv, env)
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        output.extend(data)
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


def test_a_terminal_gets_progress_bars_and_no_color_drops_their_colour(
        own_image: Path) -> None:
    argv = khib_argv("rebuild", "khib-core", "-c", DEFAULT_CONFIG, "-o", own_image.parent)
    status, shown = run_in_terminal(argv, dict(os.environ))
    assert status == 0, shown[-3000:]
    assert re.search(r"packages .*\d/6", shown)  # the packages' bar, counting
    assert re.search(r"\x1b\[[0-9;]*3\dm", shown)  # in colour
    assert "khib-core 0.1: built (" in shown  # the plain lines stay
    assert "khib-core 0.1: make" not in shown  # a step's line only with -v
    status, shown = run_in_terminal([*argv, "-v"], dict(os.environ, NO_COLOR="1"))
    assert status == 0, shown[-3000:]
    assert re.search(r"packages .*\d/6", shown)
    assert "khib-core: $ make 'CC=" in shown  # -v: the commands builds run
    assert "khib-core 0.1: make install" in shown  # and each step
    assert not re.search(r"\x1b\[[0-9;]*m", shown)  # no colour or style at all


def test_fetch_all_fills_the_download_dir_with_every_recipes_source(
        own_image: Path, tmp_path: Path) -> None:
    """--all takes every recipe on the search path, also those the image leaves out."""

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    payload = tmp_path / "extra-1.0"
    payload.mkdir()
    (payload / "COPYING").write_text("MIT\n")
    subprocess.run(["tar", "-czf", mirror / "extra-1.0.tar.gz", "-C", tmp_path, "extra-1.0"],
                   check=True)
    sha = hashlib.sha256((mirror / "extra-1.0.tar.gz").read_bytes()).hexdigest()
    write_recipe(tmp_path, "extra", version="1.0", license="MIT", license_files=["COPYING"],
                 source={"urls": ["https://example.invalid/extra-1.0.tar.gz"], "sha256": sha})
    config = tmp_path / "image.yaml"
    config.write_text(f"packages: [busybox]\nrecipe_dirs: [recipes]\n"
                      f"mirrors: [file://{mirror}, file://{user_download_dir()}]\n")
    dl = tmp_path / "dl"
    assert_ok(khib("fetch", "-c", config, "--dl-dir", dl, "--offline"))
    assert sorted(p.name for p in dl.iterdir() if p.is_file()) == ["busybox-1.35.0.tar.bz2"]
    assert_ok(khib("fetch", "-c", config, "--dl-dir", dl, "--offline", "--all"))
    fetched = {p.name for p in dl.iterdir() if p.is_file()}
    assert {"extra-1.0.tar.gz", "busybox-1.35.0.tar.bz2", "kexec-tools-2.0.25.tar.xz",
            "Python-3.11.2.tgz"} <= fetched
