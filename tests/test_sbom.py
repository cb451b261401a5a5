"""legal-info's two SBOMs, SPDX 2.3 and CycloneDX 1.6: each checked by its format's own
validator, the same components in both (packages, Debian packages, the kernel) with their
licenses, sha256s and package URLs, the dependencies the recipes declare, and the same
bytes from the same inputs."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from cyclonedx.schema import SchemaVersion
from cyclonedx.spdx import is_expression, is_supported_id
from cyclonedx.validation.json import JsonStrictValidator
from license_expression import get_spdx_licensing
from packageurl import PackageURL
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from khib_build.fsutil import sha256_of
from khib_build.reports.spdx import idstring
from khib_build.reports.spdx_licenses import EXCEPTIONS, LICENSES, spdx_expression
from khib_build.settings.recipes import load_recipe
from tests.helpers import REPO, assert_ok, khib, write_recipe
from tests.test_kinds import make_deb

EPOCH = 1700000000  # 2023-11-14T22:13:20Z
DEB_VERSION = "1:2.0-1+b1"  # an epoch and a + for the package URL to encode
NAMED = "Custom-Permissive (see COPYING)"  # no SPDX expression: a license by name
KERNEL_URL = "https://example.invalid/linux-6.1.7.tar.gz"
LINUX = load_recipe(REPO / "recipes" / "linux" / "recipe.yaml")  # the kernel's, built in


def tarball(path: Path, files: dict[str, bytes]) -> str:
    """A .tar.gz of ``files``; its sha256."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return sha256_of(path)


def image_with_every_kind(root: Path) -> Path:
    """An image of an upstream tarball package, a deb package of two Debian packages and
    a src/ package under a named license, with a kernel (a fake 6.1.7 tree) pinned by URL;
    everything in the download dir, for --offline. Its config."""
    dl = root / "dl"
    dl.mkdir()
    upstream = tarball(dl / "upstream-1.0.tar.gz", {"upstream-1.0/LICENSE": b"MIT\n"})
    write_recipe(root, "upstream", version="1.0", license="MIT", license_files=["LICENSE"],
                 source={"urls": ["https://example.invalid/upstream-1.0.tar.gz"],
                         "sha256": upstream})
    debs = []
    for name in ("debbed", "debbed-data"):
        made = make_deb(root, name, DEB_VERSION, {
            f"usr/share/doc/{name}/copyright": b"License: MIT or Apache-2.0\n"})
        shutil.copyfile(made, dl / f"{name}_2.0-1+b1_i386.deb")
        debs.append({"name": name, "version": DEB_VERSION, "sha256": sha256_of(made)})
    write_recipe(root, "debbed", version="2.0-1", license="MIT OR Apache-2.0", kind="deb",
                 debs={"i386": debs}, depends=["upstream"])
    (root / "recipes" / "own" / "src").mkdir(parents=True)
    (root / "recipes" / "own" / "src" / "COPYING").write_text("Do as you please.\n")
    write_recipe(root, "own", version="0.3", license=NAMED, license_files=["COPYING"],
                 depends=["debbed", "upstream"])
    kernel = tarball(dl / "linux-6.1.7.tar.gz", {
        f"linux-6.1.7/{name}": data for name, data in (
            ("Makefile", b"VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 7\n"), ("Kconfig", b""),
            *((name, b"GPL-2.0\n") for name in LINUX.license_files))})
    config = root / "image.yaml"
    config.write_text(yaml.safe_dump({
        "name": "sample", "arch": "i386", "recipe_dirs": ["recipes"], "packages": ["own"],
        "compression": "none", "output": "rootfs.cpio",
        "kernel_source": {"url": KERNEL_URL, "sha256": kernel}}))
    return config


def legal_info(root: Path, config: Path, out: str, umask: int = -1, **env: str) -> Path:
    """legal-info offline into ``root/out``, with SOURCE_DATE_EPOCH and ``env``; its folder."""
    assert_ok(khib("legal-info", "-c", config, "-o", root / out, "--offline", "--dl-dir",
                   root / "dl", "--cache-dir", root / "cache", umask=umask,
                   env={**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH), **env}))
    return root / out / "legal-info"


def flattened(components: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """CycloneDX components by bom-ref, the nested ones too."""
    found = {}
    for component in components:
        found[component["bom-ref"]] = component
        found |= flattened(component.get("components", []))
    return found


def test_both_sboms_list_every_component_with_license_hash_and_purl(tmp_path: Path) -> None:
    config = image_with_every_kind(tmp_path)
    folder = legal_info(tmp_path, config, "out")
    text = (folder / "sbom.cdx.json").read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    assert validate_full_spdx_document(parse_file(str(folder / "sbom.spdx.json"))) == []
    cdx = json.loads(text)
    spdx = json.loads((folder / "sbom.spdx.json").read_text())

    dl = tmp_path / "dl"
    own_archive = folder / "sources" / "own-0.3" / "own-0.3.tar.gz"
    upstream_url = "https://example.invalid/upstream-1.0.tar.gz"
    deb_purl = {name: PackageURL("deb", "debian", name, DEB_VERSION, {"arch": "i386"})
                for name in ("debbed", "debbed-data")}
    # (name, version, CycloneDX license, sha256, purl) of each component.
    expected = {
        "Package-upstream": ("upstream", "1.0", {"license": {"id": "MIT"}},
                             sha256_of(dl / "upstream-1.0.tar.gz"),
                             PackageURL("generic", None, "upstream", "1.0",
                                        {"download_url": upstream_url})),
        "Package-debbed": ("debbed", "2.0-1", {"expression": "MIT OR Apache-2.0"}, None,
                           PackageURL("generic", None, "debbed", "2.0-1")),
        **{f"Deb-debbed/{name}_2.0-1+b1_i386.deb": (
            name, DEB_VERSION, {"expression": "MIT OR Apache-2.0"},
            sha256_of(dl / f"{name}_2.0-1+b1_i386.deb"), purl)
           for name, purl in deb_purl.items()},
        "Package-own": ("own", "0.3", {"license": {"name": NAMED}}, sha256_of(own_archive),
                        PackageURL("generic", None, "own", "0.3")),
        "Kernel-linux": ("linux", "6.1.7", {"license": {"id": LINUX.license}},
                         sha256_of(dl / "linux-6.1.7.tar.gz"),
                         PackageURL("generic", None, "linux", "6.1.7",
                                    {"download_url": KERNEL_URL})),
    }
    components = flattened(cdx["components"])
    assert set(components) == set(expected)
    for ref, (name, version, license, sha256, purl) in expected.items():
        found = components[ref]
        assert (found["name"], found["version"], found["licenses"]) == (name, version,
                                                                       [license])
        assert found.get("hashes") == ([{"alg": "SHA-256", "content": sha256}]
                                       if sha256 else None)
        assert found["purl"] == purl.to_string()
        assert PackageURL.from_string(found["purl"]) == purl
    assert [c["bom-ref"] for c in components["Package-debbed"]["components"]] == [
        f"Deb-debbed/{name}_2.0-1+b1_i386.deb" for name in deb_purl]
    assert deb_purl["debbed"].to_string() == "pkg:deb/debian/debbed@1:2.0-1%2Bb1?arch=i386"

    # The dependencies are the recipes' depends; the image depends on every package.
    recipes = {name: load_recipe(tmp_path / "recipes" / name / "recipe.yaml")
               for name in ("upstream", "debbed", "own")}
    graph = {d["ref"]: d["dependsOn"] for d in cdx["dependencies"]}
    assert graph == {"Image": ["Package-upstream", "Package-debbed", "Package-own"],
                     **{f"Package-{name}": [f"Package-{dep}" for dep in recipe.depends]
                        for name, recipe in recipes.items()},
                     **{ref: [] for ref in expected if not ref.startswith("Package-")}}
    assert graph["Package-own"] == ["Package-debbed", "Package-upstream"]
    assert cdx["metadata"]["timestamp"] == "2023-11-14T22:13:20Z"
    assert cdx["metadata"]["component"]["name"] == "sample-i386"
    assert uuid.UUID(cdx["serialNumber"].removeprefix("urn:uuid:")).version == 5

    # The SPDX document lists the same components with the same hashes and purls.
    packages = {p["SPDXID"]: p for p in spdx["packages"]}
    for ref, (name, version, _, sha256, purl) in expected.items():
        package = packages[f"SPDXRef-{idstring(ref)}"]
        assert (package["name"], package["versionInfo"]) == (name, version)
        assert package["externalRefs"] == [{"referenceCategory": "PACKAGE-MANAGER",
                                            "referenceType": "purl",
                                            "referenceLocator": purl.to_string()}]
        assert package.get("checksums") == ([{"algorithm": "SHA256",
                                               "checksumValue": sha256}] if sha256 else None)
    assert packages["SPDXRef-Package-debbed"]["licenseDeclared"] == "MIT OR Apache-2.0"
    ref = packages["SPDXRef-Package-own"]["licenseDeclared"]
    assert spdx["hasExtractedLicensingInfos"][0]["licenseId"] == ref
    assert spdx["hasExtractedLicensingInfos"][0]["name"] == NAMED
    assert packages["SPDXRef-Package-upstream"]["downloadLocation"] == upstream_url
    relations = {(r["spdxElementId"], r["relationshipType"], r["relatedSpdxElement"])
                 for r in spdx["relationships"]}
    assert ("SPDXRef-DOCUMENT", "DESCRIBES", "SPDXRef-Kernel-linux") in relations
    assert ("SPDXRef-Package-own", "DEPENDS_ON", "SPDXRef-Package-debbed") in relations
    assert ("SPDXRef-Package-debbed", "CONTAINS",
            "SPDXRef-Deb-debbed-debbed-data-2.0-1-b1-i386.deb") in relations

    # Same inputs, same bytes: another output dir, umask, time zone and locale.
    again = legal_info(tmp_path, config, "again", 0o077, TZ="Asia/Tokyo", LC_ALL="C.UTF-8")
    for name in ("sbom.cdx.json", "sbom.spdx.json"):
        assert (again / name).read_bytes() == (folder / name).read_bytes()


def test_license_ids_named_as_spdx_are_ones_both_validators_know() -> None:
    licensing = get_spdx_licensing()  # spdx-tools' list
    assert all(not licensing.known_symbols[i].is_exception for i in LICENSES)
    assert all(licensing.known_symbols[i].is_exception for i in EXCEPTIONS)
    assert all(is_supported_id(i) for i in LICENSES | EXCEPTIONS)  # CycloneDX's


@pytest.mark.parametrize(("text", "spdx"), [
    ("MIT", True), ("GPL-2.0-only WITH Linux-syscall-note", True),
    ("(MIT OR Apache-2.0) AND BSD-2-Clause", True), ("((MIT))", True), ("", False),
    ("MIT OR", False), ("Foo-1.0", False), ("MIT WITH MIT", False), ("MIT WITH", False),
    ("Linux-syscall-note", False), ("(MIT", False), ("MIT)", False), ("( )", False),
    ("mit", False), ("MIT and Apache-2.0", False), (NAMED, False)])
def test_a_license_is_an_spdx_expression_of_known_ids_or_a_name(text: str, spdx: bool) -> None:
    assert spdx_expression(text) == spdx
    if spdx:
        assert is_expression(text)  # CycloneDX's own (laxer) check agrees
