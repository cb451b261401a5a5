"""lint finds each kind of seeded defect, and passes on every recipe in recipes/."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from tests.helpers import REPO, khib

HELLO = b"int main(void)\n{\n\treturn 0;\n}\n"
GOOD_PATCH = """--- a/hello.c
+++ b/hello.c
@@ -1,4 +1,4 @@
 int main(void)
 {
-\treturn 0;
+\treturn 1;
 }
"""
STALE_PATCH = GOOD_PATCH.replace("return 0", "return 7")  # context the source lacks


def tarball(path: Path) -> str:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in (("hello.c", HELLO), ("COPYING", b"GPL\n")):
            info = tarfile.TarInfo(f"defects-1.0/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_recipes(root: Path, dl: Path) -> tuple[Path, Path, Path, Path]:
    sha = tarball(dl / "defects-1.0.tar.gz")
    defects = root / "defects"
    (defects / "patches").mkdir(parents=True)
    (defects / "files").mkdir()
    (defects / "patches" / "0001-return-one.patch").write_text(GOOD_PATCH)
    (defects / "patches" / "stale.patch").write_text(STALE_PATCH)  # badly named, fails
    (defects / "patches" / "0003-forgotten.patch").write_text(GOOD_PATCH)  # not listed
    (defects / "files" / "leftover.conf").write_text("x=1\n")  # used by nothing
    (defects / "recipe.yaml").write_text(f"""name: defects
version: "1.0"
license: GPL-2.0-only
source:
  urls: [https://example.invalid/defects-1.0.tar.gz]
  sha256: {sha}
patches:
  - patches/0001-return-one.patch
  - patches/stale.patch
build:
  - make
install:
  - make install
""")
    unhashed = root / "unhashed"
    unhashed.mkdir()
    (unhashed / "recipe.yaml").write_text("""name: unhashed
version: "1.0"
license: MIT
license_files: [LICENSE]
source:
  urls: [https://example.invalid/unhashed-1.0.tar.gz]
  sha256: 1234
""")
    mistyped = root / "mistyped"
    mistyped.mkdir()
    (mistyped / "recipe.yaml").write_text(f"""name: mistyped
version: "1.0"
license: MIT
source:
  urls: ["https://example.invalid/mistyped-{{{{ verison }}}}.tar.gz"]
  sha256: {sha}
""")
    templated = root / "templated"  # the version written once: nothing to find
    templated.mkdir()
    (templated / "recipe.yaml").write_text("""name: templated
version: "2"
license: MIT
license_files: [COPYING]
source:
  urls: ["http://127.0.0.1:8080/templated-{{ version }}.tar.gz"]
  sha256: 2222222222222222222222222222222222222222222222222222222222222222
  debian: {package: templated2, file: "templated_{{ version }}.orig.tar.gz"}
""")
    return defects, unhashed, mistyped, templated


def test_lint_finds_each_seeded_defect(tmp_path: Path) -> None:
    dl = tmp_path / "dl"
    dl.mkdir()
    defects, unhashed, mistyped, templated = write_recipes(tmp_path / "recipes", dl)
    result = khib("lint", defects, unhashed, mistyped, templated, "--dl-dir", dl, "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    findings = json.loads(result.stdout)["findings"]
    kinds = {(f["recipe"], f["check"]) for f in findings}
    assert kinds == {("defects", "license"), ("defects", "unused"), ("defects", "naming"),
                     ("defects", "patch"), ("defects", "version"), ("unhashed", "schema"),
                     ("mistyped", "schema")}
    # The version written again in a pin, where {{ version }} belongs; a mistyped variable.
    version = next(f for f in findings if f["check"] == "version")
    assert version["line"] == 5, version
    assert version["message"] == ("https://example.invalid/defects-1.0.tar.gz: the version "
                                  "1.0 is written again; write {{ version }}, so that a new "
                                  "version is one edit")
    typo = next(f for f in findings if f["recipe"] == "mistyped")
    assert typo["line"] == 5 and "'verison' is undefined" in typo["message"], typo
    messages = "\n".join(f["message"] for f in findings)
    assert "0003-forgotten.patch is in patches/ but not listed" in messages
    assert "files/leftover.conf is not used" in messages
    assert "stale.patch does not apply to defects-1.0.tar.gz" in messages
    schema = next(f for f in findings if f["check"] == "schema")
    assert schema["line"] == 7 and "sha256" in schema["message"]
    # The plain output names file and line, one finding per line.
    text = khib("lint", defects, unhashed, "--dl-dir", dl)
    assert text.returncode == 1
    assert f"{unhashed / 'recipe.yaml'}:7: [schema]" in text.stdout


def test_lint_passes_on_every_recipe_of_the_repo(tmp_path: Path) -> None:
    """Patches are tried on real sources: the download dir's tarballs, the kernel's. (An
    output dir without an image: the recipes alone.)"""
    result = khib("lint", "--json", "-o", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    found = json.loads(result.stdout)
    assert sorted(found["recipes"]) == sorted(p.parent.name
                                              for p in (REPO / "recipes").glob("*/recipe.yaml"))
    assert found["findings"] == []
