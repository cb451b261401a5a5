"""legal-info's CycloneDX 1.6 SBOM (sbom.cdx.json): the image as the BOM's subject, the
packages (a deb package's Debian packages inside it) and the kernel as its components,
and the packages' dependencies.

Written as plain JSON: the CycloneDX library (the tests validate the document with its
validator) is not packaged for Debian 12, where khib-build runs."""

from __future__ import annotations

import uuid
from typing import Any

from khib_build import __version__
from khib_build.reports.sbom import Bom, Component, digest
from khib_build.reports.spdx_licenses import LICENSES, spdx_expression

SCHEMA = "http://cyclonedx.org/schema/bom-1.6.schema.json"
TYPE = {"image": "operating-system", "kernel": "operating-system"}  # else application


def licenses(license: str) -> list[dict[str, Any]]:
    """A declared license as CycloneDX gives it: an SPDX id, an SPDX expression, or a
    license by name."""
    if license in LICENSES:
        return [{"license": {"id": license}}]
    if spdx_expression(license):
        return [{"expression": license}]
    return [{"license": {"name": license}}]


def cyclonedx_component(component: Component) -> dict[str, Any]:
    """A component with its license, sha256, purl, download URL and parts."""
    found: dict[str, Any] = {"type": TYPE.get(component.kind, "application"),
                             "bom-ref": component.ref, "name": component.name,
                             "version": component.version}
    if component.license is not None:
        found["licenses"] = licenses(component.license)
    if component.sha256:
        found["hashes"] = [{"alg": "SHA-256", "content": component.sha256}]
    found["purl"] = component.purl
    if component.url:
        found["externalReferences"] = [{"type": "distribution", "url": component.url}]
    if component.parts:
        found["components"] = [cyclonedx_component(part) for part in component.parts]
    return found


def cyclonedx_document(bom: Bom) -> dict[str, Any]:
    """The CycloneDX 1.6 document. Deterministic: its timestamp is SOURCE_DATE_EPOCH and
    its serial number a UUID (version 5) of a digest of its content."""
    document: dict[str, Any] = {
        "$schema": SCHEMA,
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "version": 1,
        "metadata": {
            "timestamp": bom.timestamp,
            "tools": {"components": [{"type": "application", "name": "khib-build",
                                      "version": __version__}]},
            "component": cyclonedx_component(bom.image),
        },
        "components": [cyclonedx_component(c) for c in bom.top_level()],
        "dependencies": [{"ref": bom.image.ref, "dependsOn": [p.ref for p in bom.packages]},
                         *({"ref": c.ref, "dependsOn": list(c.depends)}
                           for c in bom.components())],
    }
    serial = uuid.uuid5(uuid.NAMESPACE_URL, f"urn:sha256:{digest(document)}")
    return {**document, "serialNumber": serial.urn}
