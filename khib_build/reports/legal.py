"""legal-info: an SPDX 2.3 SBOM of the image, and each package's license files and patches.

Upstream license files are read straight out of the verified source tarball (libarchive,
one member), so nothing has to be unpacked or built first.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from khib_build import __version__
from khib_build.errors import KhibError
from khib_build.fsutil import built_beside
from khib_build.pipeline import Plan
from khib_build.settings.recipes import Recipe, package_facts
from khib_build.sources.extract import source_members


def spdx_id(name: str) -> str:
    return "SPDXRef-Package-" + "".join(c if c.isalnum() or c in ".-" else "-" for c in name)


def spdx_package(recipe: Recipe) -> dict[str, Any]:
    """A package's facts as an SPDX package."""
    facts = package_facts(recipe)
    source = facts["source"]
    package: dict[str, Any] = {
        "SPDXID": spdx_id(facts["name"]),
        "name": facts["name"],
        "versionInfo": facts["version"],
        "downloadLocation": source["urls"][0] if source else "NOASSERTION",
        "filesAnalyzed": False,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": facts["license"],
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "APPLICATION",
    }
    if source:
        package["packageFileName"] = source["file"]
        package["checksums"] = [{"algorithm": "SHA256", "checksumValue": source["sha256"]}]
    return package


def sbom(plan: Plan, image_sha256: str | None, epoch: int) -> dict[str, Any]:
    """The SPDX 2.3 document: the image, its packages, what contains and depends on what.
    Deterministic: its time is SOURCE_DATE_EPOCH and its namespace a digest of its inputs."""
    config = plan.config
    packages = [spdx_package(r) for r in plan.recipes]
    image: dict[str, Any] = {
        "SPDXID": "SPDXRef-Image", "name": f"{config.name}-{config.arch}",
        "versionInfo": config.version, "packageFileName": config.output,
        "downloadLocation": "NOASSERTION", "filesAnalyzed": False,
        "licenseConcluded": "NOASSERTION", "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION", "primaryPackagePurpose": "OPERATING-SYSTEM",
        "supplier": "NOASSERTION",
    }
    if image_sha256:
        image["checksums"] = [{"algorithm": "SHA256", "checksumValue": image_sha256}]
    relationships = [{"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
                      "relatedSpdxElement": "SPDXRef-Image"}]
    for recipe in plan.recipes:
        relationships.append({"spdxElementId": "SPDXRef-Image", "relationshipType": "CONTAINS",
                              "relatedSpdxElement": spdx_id(recipe.name)})
        relationships += [{"spdxElementId": spdx_id(recipe.name),
                           "relationshipType": "DEPENDS_ON",
                           "relatedSpdxElement": spdx_id(dep)} for dep in recipe.depends]
    digest = hashlib.sha256(json.dumps([image, packages], sort_keys=True).encode()).hexdigest()
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{config.name}-{config.version}-{config.arch}",
        "documentNamespace": f"https://spdx.org/spdxdocs/khib-build/{config.name}-{digest}",
        "creationInfo": {
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch)),
            "creators": [f"Tool: khib-build-{__version__}"],
        },
        "packages": [image, *packages],
        "relationships": relationships,
    }


def license_texts(recipe: Recipe, tarball: Path | None) -> dict[str, bytes]:
    """The recipe's license files: from the source tarball's top folder, or its src/."""
    source = tarball or recipe.folder / "src"
    wanted = set(recipe.license_files)
    texts = source_members(source, wanted)
    missing = sorted(wanted - texts.keys())
    if missing:
        raise KhibError(f"package {recipe.name}: license file(s) {', '.join(missing)} "
                        f"not in {source}")
    return texts


def write_legal_info(plan: Plan, tarballs: dict[str, Path], image_sha256: str | None,
                     epoch: int, folder: Path) -> Path:
    """Fill ``folder`` with sbom.spdx.json, licenses/<pkg>/… and patches/<pkg>/…: made
    beside it and swapped in whole, so a failed run leaves the previous one intact."""
    with built_beside(folder) as work:
        for recipe in plan.recipes:
            for name, text in license_texts(recipe, tarballs.get(recipe.name)).items():
                target = work / "licenses" / recipe.name / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(text)
            for patch in recipe.patches:
                target = work / "patches" / recipe.name / patch.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(patch, target)
        (work / "sbom.spdx.json").write_text(json.dumps(sbom(plan, image_sha256, epoch),
                                                         indent=2) + "\n")
        work.chmod(0o755)
        if folder.exists():
            shutil.rmtree(folder)
    return folder / "sbom.spdx.json"
