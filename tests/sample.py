"""A small real package for tests: a C program in a tarball, with a recipe and config."""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

HELLO_C = b"""#include <stdio.h>
int main(void) { printf("hello from khib sample, %d-bit\\n", (int)(8 * sizeof(void *))); return 0; }
"""
MAKEFILE = b"""hello: hello.c
\t$(CC) $(CFLAGS) -static -o $@ hello.c $(LDFLAGS)
"""


@dataclass(frozen=True)
class Sample:
    tarball: bytes
    filename: str
    sha256: str
    config: Path


def make_tarball(version: str = "1.0") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        for name, data in (("hello.c", HELLO_C), ("Makefile", MAKEFILE)):
            info = tarfile.TarInfo(f"hello-{version}/{name}")
            info.size, info.mtime, info.mode = len(data), 1_000_000_000, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_sample(root: Path, urls: list[str], mirrors: list[str], arch: str = "i386") -> Sample:
    """A recipe dir and an image config that builds the sample for ``arch``."""
    tarball = make_tarball()
    sha = hashlib.sha256(tarball).hexdigest()
    recipe = root / "recipes" / "hello" / "recipe.yaml"
    recipe.parent.mkdir(parents=True)
    recipe.write_text(
        "name: hello\nversion: '1.0'\nlicense: MIT\nsource:\n"
        f"  urls: [{', '.join(urls)}]\n  sha256: {sha}\n  file: hello-1.0.tar.gz\n"
        "build:\n  - make CC=\"{{ cc }}\" CFLAGS=\"{{ cflags }}\" LDFLAGS=\"{{ ldflags }}\"\n"
        "install:\n  - install -D -m 755 hello {{ destdir }}/usr/bin/hello\n"
    )
    cc = "[gcc, -m32]" if arch == "i386" else "[gcc]"
    config = root / "sample.yaml"
    config.write_text(
        f"name: sample\narch: {arch}\ntoolchain: {{cc: {cc}}}\nrecipe_dirs: [recipes]\n"
        f"packages: [hello]\nmirrors: [{', '.join(mirrors)}]\n"
    )
    return Sample(tarball, "hello-1.0.tar.gz", sha, config)


def build_greet(root: Path, recipe_extra: str = "") -> str:
    """Build an image of one package made from its own src/ folder; its inspect listing."""
    from tests.conftest import assert_ok, khib

    recipe = root / "recipes" / "greet"
    (recipe / "src").mkdir(parents=True, exist_ok=True)
    (recipe / "src" / "greet.sh").write_text("#!/bin/sh\necho greetings\n")
    (recipe / "recipe.yaml").write_text(
        f"name: greet\nversion: '2'\nlicense: MIT\n{recipe_extra}"
        "install:\n  - install -D -m 755 greet.sh {{ destdir }}/bin/greet\n")
    config = root / "img.yaml"
    config.write_text("recipe_dirs: [recipes]\npackages: [greet]\ncompression: none\n"
                      "output: rootfs.cpio\n")
    assert_ok(khib("rootfs", "-c", config, "-o", root / "out", "--cache-dir", root / "cache"))
    return khib("inspect", root / "out" / "rootfs.cpio").stdout
