"""A small real package for tests: a C program in a tarball, with a recipe and config."""

from __future__ import annotations

import hashlib
import io
import json
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


GREET_H = "const char *greeting(void);\n"
GREET_C = '#include "greet.h"\nconst char *greeting(void) { return "hello from libgreet"; }\n'
APP_C = ('#include <stdio.h>\n#include <greet.h>\n'
         'int main(void) { puts(greeting()); return 0; }\n')
TOOL_C = '#include <stdio.h>\nint main(void) { puts("tool"); return 0; }\n'
LIBGREET_BUILD = """#!/bin/sh
# Builds the static library.
set -e
$CC $CFLAGS -c greet.c -o greet.o
ar rcs libgreet.a greet.o
"""


def write_graph_sample(root: Path, extra_steps: str = "") -> Path:
    """Three src/ packages for i386: libgreet (a static library), app (links it) and tool
    (independent); ``extra_steps`` are build commands every package runs first.  The
    image config's path."""
    packages = {
        "libgreet": ({"greet.h": GREET_H, "greet.c": GREET_C}, [],
                     ["CC=\"{{ cc }}\" CFLAGS=\"{{ cflags }}\" sh {{ files }}/build.sh"],
                     ["install -D -m 644 greet.h {{ destdir }}/usr/include/greet.h",
                      "install -D -m 644 libgreet.a {{ destdir }}/usr/lib/libgreet.a"]),
        "app": ({"app.c": APP_C}, ["libgreet"],
                ["{{ cc }} {{ cflags }} -static -o app app.c -L{{ sysroot }}/usr/lib -lgreet"
                 " {{ ldflags }}"],
                ["install -D -m 755 app {{ destdir }}/usr/bin/app"]),
        "tool": ({"tool.c": TOOL_C}, [],
                 ["{{ cc }} {{ cflags }} -static -o tool tool.c {{ ldflags }}"],
                 ["install -D -m 755 tool {{ destdir }}/usr/bin/tool"]),
    }
    for name, (sources, depends, build, install) in packages.items():
        folder = root / "recipes" / name
        (folder / "src").mkdir(parents=True)
        for file, text in sources.items():
            (folder / "src" / file).write_text(text)
        steps = [line for line in extra_steps.splitlines() if line] + build
        (folder / "recipe.yaml").write_text(
            f"name: {name}\nversion: '1'\nlicense: MIT\ndepends: {depends}\n"
            f"build:\n{yaml_list(steps)}install:\n{yaml_list(install)}")
    (root / "recipes" / "libgreet" / "files").mkdir()
    (root / "recipes" / "libgreet" / "files" / "build.sh").write_text(LIBGREET_BUILD)
    config = root / "graph.yaml"
    config.write_text("name: graph\narch: i386\ntoolchain: {cc: [gcc, -m32], ldflags: [-m32]}\n"
                      "recipe_dirs: [recipes]\npackages: [app, tool]\n")
    return config


def yaml_list(items: list[str]) -> str:
    return "".join(f"  - {json.dumps(item)}\n" for item in items)
