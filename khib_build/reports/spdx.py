"""legal-info's SPDX 2.3 SBOM (sbom.spdx.json): the image and the kernel, the packages and
Debian packages, and what contains and depends on what."""

from __future__ import annotations

import re
from typing import Any

from khib_build import __version__
from khib_build.reports.sbom import Bom, Component, digest
from khib_build.reports.spdx_licenses import spdx_expression

PURPOSE = {"image": "OPERATING-SYSTEM", "kernel": "OPERATING-SYSTEM"}  # else APPLICATION


def idstring(text: str) -> str:
    """``text`` with what SPDX ids may not hold (beyond letters, digits, . and -) as -."""
    return re.sub(r"[^A-Za-z0-9.-]", "-", text)


def declared(license: str | None) -> str:
    """A license as SPDX declares it: its expression, a LicenseRef- for a named one."""
    if license is None:
        return "NOASSERTION"
    return license if spdx_expression(license) else f"LicenseRef-{idstring(license)}"


def spdx_package(component: Component) -> dict[str, Any]:
    """A component as an SPDX package, with its purl."""
    package: dict[str, Any] = {
        "SPDXID": f"SPDXRef-{idstring(component.ref)}",
        "name": component.name,
        "versionInfo": component.version,
        "downloadLocation": component.url or "NOASSERTION",
        "filesAnalyzed": False,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": declared(component.license),
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": PURPOSE.get(component.kind, "APPLICATION"),
        "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                          "referenceLocator": component.purl}],
    }
    if component.file:
        package["packageFileName"] = component.file
    if component.sha256:
        package["checksums"] = [{"algorithm": "SHA256", "checksumValue": component.sha256}]
    return package


def relationships(bom: Bom) -> list[tuple[str, str, str]]:
    """(element, relationship, related element): the document describes the image and the
    kernel; the image contains the packages, which depend on others and contain their
    Debian packages."""
    found = [("DOCUMENT", "DESCRIBES", bom.image.ref)]
    if bom.kernel:
        found.append(("DOCUMENT", "DESCRIBES", bom.kernel.ref))
    for package in bom.packages:
        found.append((bom.image.ref, "CONTAINS", package.ref))
        found += [(package.ref, "DEPENDS_ON", dep) for dep in package.depends]
        found += [(package.ref, "CONTAINS", part.ref) for part in package.parts]
    return found


def spdx_document(bom: Bom) -> dict[str, Any]:
    """The SPDX 2.3 document. Deterministic: its time is SOURCE_DATE_EPOCH and its
    namespace a digest of its content."""
    components = [bom.image, *bom.components()]
    named = {declared(c.license): c.license for c in components
             if c.license is not None and not spdx_expression(c.license)}
    document: dict[str, Any] = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{bom.image.name}-{bom.image.version}",
        "creationInfo": {"created": bom.timestamp,
                         "creators": [f"Tool: khib-build-{__version__}"]},
        "packages": [spdx_package(c) for c in components],
        "relationships": [{"spdxElementId": f"SPDXRef-{idstring(element)}",
                           "relationshipType": kind,
                           "relatedSpdxElement": f"SPDXRef-{idstring(related)}"}
                          for element, kind, related in relationships(bom)],
    }
    if named:
        document["hasExtractedLicensingInfos"] = [
            {"licenseId": ref, "name": text, "extractedText": text,
             "comment": "the license as the recipe names it; its texts are in licenses/"}
            for ref, text in sorted(named.items())]
    namespace = f"https://spdx.org/spdxdocs/khib-build/{bom.image.name}-{digest(document)}"
    return {**document, "documentNamespace": namespace}
