"""Bad configs and recipes: exit 2, one message with file and line, no traceback, no output."""

from __future__ import annotations

import contextlib
import io
import re
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from khib_build.cli import main
from tests.helpers import khib

SHA = "0" * 64
GOOD_RECIPE = f"""\
name: tool
version: "1.0"
license: MIT
source:
  urls: [http://127.0.0.1:9/tool-1.0.tar.gz]
  sha256: {SHA}
build:
  - make CC="{{{{ cc }}}}"
"""
GOOD_CONFIG = """\
name: broken
recipe_dirs: [recipes]
packages: [tool]
"""

# (case id, files to write, file named in the message, line, text in the message)
CASES = [
    ("invalid-yaml", {"khib.yaml": "name: x\npackages: [tool\n"}, "khib.yaml", 3,
     "invalid YAML"),
    ("unknown-key", {"khib.yaml": GOOD_CONFIG + "overlay: []\n"}, "khib.yaml", 4,
     "unknown key 'overlay' (did you mean 'overlays'?)"),
    ("key-twice", {"khib.yaml": GOOD_CONFIG + "name: again\n"}, "khib.yaml", 4,
     "key 'name' is given twice (first on line 1)"),
    ("wrong-type", {"khib.yaml": GOOD_CONFIG + "compression_level: high\n"}, "khib.yaml", 4,
     "expected an integer from 0 to 22, got a string 'high'"),
    ("level-for-format", {"khib.yaml": GOOD_CONFIG + "compression: gzip\ncompression_level: 15\n"},
     "khib.yaml", 5, "gzip takes levels 1 to 9, not 15"),
    ("bad-choice", {"khib.yaml": GOOD_CONFIG + "arch: i368\n"}, "khib.yaml", 4,
     "expected one of i386, x86_64, got 'i368' (did you mean 'i386'?)"),
    ("missing-packages", {"khib.yaml": "name: x\n"}, "khib.yaml", 1, "missing key 'packages'"),
    ("missing-sha256", {"recipes/tool/recipe.yaml": GOOD_RECIPE.replace(f"  sha256: {SHA}\n", "")},
     "recipes/tool/recipe.yaml", 5, "missing key 'sha256'"),
    ("bad-sha256", {"recipes/tool/recipe.yaml": GOOD_RECIPE.replace(SHA, "abc")},
     "recipes/tool/recipe.yaml", 6, "expected a sha256 of 64 lower-case hex digits"),
    ("missing-dependency", {"recipes/tool/recipe.yaml": GOOD_RECIPE + "depends: [libnope]\n"},
     "recipes/tool/recipe.yaml", 9, "no recipe for package 'libnope'"),
    ("missing-package", {"khib.yaml": GOOD_CONFIG.replace("[tool]", "[tool, ghost]")},
     "khib.yaml", 3, "no recipe for package 'ghost'"),
    ("template-error", {"recipes/tool/recipe.yaml": GOOD_RECIPE.replace("cc }}", "ccc }}")},
     "recipes/tool/recipe.yaml", 8, "'ccc' is undefined"),
    ("name-mismatch", {"recipes/tool/recipe.yaml": GOOD_RECIPE.replace("name: tool", "name: tol")},
     "recipes/tool/recipe.yaml", 1, "differs from the recipe's folder"),
    ("bad-name", {"khib.yaml": GOOD_CONFIG.replace("[tool]", "[../tool]")}, "khib.yaml", 3,
     "expected a name of lower-case letters"),
    ("tab-indent", {"khib.yaml": GOOD_CONFIG + "toolchain:\n\tcc: [gcc]\n"}, "khib.yaml", 5,
     "invalid YAML"),
    ("two-documents", {"khib.yaml": GOOD_CONFIG + "---\nname: other\n"}, "khib.yaml", 4,
     "invalid YAML"),
    ("empty-file", {"khib.yaml": ""}, "khib.yaml", 1, "the file is empty"),
    ("top-level-list", {"khib.yaml": "- busybox\n"}, "khib.yaml", 1,
     "expected a mapping, got a list"),
    ("packages-not-list", {"khib.yaml": GOOD_CONFIG.replace("[tool]", "tool")}, "khib.yaml", 3,
     "expected a list"),
    ("packages-empty", {"khib.yaml": GOOD_CONFIG.replace("[tool]", "[]")}, "khib.yaml", 3,
     "expected at least 1 item(s)"),
    ("package-twice", {"khib.yaml": GOOD_CONFIG.replace("[tool]", "[tool, tool]")},
     "khib.yaml", 3, "'tool' is listed twice"),
    ("missing-recipe-dir", {"khib.yaml": GOOD_CONFIG.replace("[recipes]", "[nowhere]")},
     "khib.yaml", 2, "directory 'nowhere' does not exist"),
    ("missing-overlay", {"khib.yaml": GOOD_CONFIG + "overlays: [gone]\n"}, "khib.yaml", 4,
     "directory 'gone' does not exist"),
    ("missing-device-table", {"khib.yaml": GOOD_CONFIG + "device_tables: [devs.txt]\n"},
     "khib.yaml", 4, "file 'devs.txt' does not exist"),
    ("output-with-slash", {"khib.yaml": GOOD_CONFIG + "output: ../rootfs.gz\n"}, "khib.yaml",
     4, "expected a file name, got '../rootfs.gz'"),
    ("bad-mirror", {"khib.yaml": GOOD_CONFIG + "mirrors: [ftp.example.org]\n"}, "khib.yaml",
     4, "expected an http(s):// or file:// URL"),
    ("toolchain-typo", {"khib.yaml": GOOD_CONFIG + "toolchain:\n  cflag: [-O2]\n"},
     "khib.yaml", 5, "unknown key 'cflag' (did you mean 'cflags'?)"),
    ("toolchain-no-compiler", {"khib.yaml": GOOD_CONFIG + "toolchain:\n  cc: []\n"},
     "khib.yaml", 5, "expected at least 1 item(s)"),
    ("negative-epoch", {"khib.yaml": GOOD_CONFIG + "source_date_epoch: -1\n"}, "khib.yaml", 4,
     "expected an integer from 0 to 4294967295, got -1"),
    ("version-mapping", {"khib.yaml": GOOD_CONFIG + "version: {major: 1}\n"}, "khib.yaml", 4,
     "expected a string, got a mapping"),
    ("recipe-no-version", {"recipes/tool/recipe.yaml": GOOD_RECIPE.replace('version: "1.0"\n',
                                                                          "")},
     "recipes/tool/recipe.yaml", 1, "missing key 'version'"),
    ("license-list", {"recipes/tool/recipe.yaml": GOOD_RECIPE.replace("license: MIT",
                                                                     "license: [MIT]")},
     "recipes/tool/recipe.yaml", 3, "expected a string, got a list"),
    ("no-urls", {"recipes/tool/recipe.yaml": GOOD_RECIPE.replace(
        "[http://127.0.0.1:9/tool-1.0.tar.gz]", "[]")},
     "recipes/tool/recipe.yaml", 5, "expected at least 1 item(s)"),
    ("sha-typo", {"recipes/tool/recipe.yaml": GOOD_RECIPE.replace("  sha256:", "  sha265:")},
     "recipes/tool/recipe.yaml", 6, "unknown key 'sha265' (did you mean 'sha256'?)"),
    ("missing-patch", {"recipes/tool/recipe.yaml": GOOD_RECIPE + "patches: [fix.patch]\n"},
     "recipes/tool/recipe.yaml", 9, "file 'fix.patch' does not exist"),
    ("depends-twice", {"recipes/tool/recipe.yaml": GOOD_RECIPE + "depends: [a, a]\n"},
     "recipes/tool/recipe.yaml", 9, "'a' is listed twice"),
    ("build-not-list", {"recipes/tool/recipe.yaml": GOOD_RECIPE.replace(
        'build:\n  - make CC="{{ cc }}"', "build: make")},
     "recipes/tool/recipe.yaml", 7, "expected a list"),
    ("template-syntax",
     {"recipes/tool/recipe.yaml": GOOD_RECIPE + "install:\n  - cp x {{ destdir\n"},
     "recipes/tool/recipe.yaml", 10, "install command 1: template error"),
    ("template-unquoted", {"recipes/tool/recipe.yaml": GOOD_RECIPE + "install:\n"
                           "  - {{ cc }} -o x x.c\n"},
     "recipes/tool/recipe.yaml", 10, "a value that starts with {{ reads as a YAML mapping: "
     "quote it"),
    ("template-unquoted-alone", {"recipes/tool/recipe.yaml": GOOD_RECIPE + "install:\n"
                                 "  - {{ cc }}\n"},
     "recipes/tool/recipe.yaml", 10, "got a mapping (a value that starts with {{ reads as a "
     "YAML mapping: quote it"),
    ("kind-key", {"recipes/tool/recipe.yaml": GOOD_RECIPE + "make_targets: [all]\n"},
     "recipes/tool/recipe.yaml", 9, "make_targets is for kind autotools or make, not commands"),
    ("dependency-with-dots", {"recipes/tool/recipe.yaml": GOOD_RECIPE + "depends: [../x]\n"},
     "recipes/tool/recipe.yaml", 9, "expected a name of lower-case letters"),
    ("debian-no-file", {"recipes/tool/recipe.yaml": GOOD_RECIPE.replace(
        "build:", "  debian: {package: tool}\nbuild:")},
     "recipes/tool/recipe.yaml", 7, "missing key 'file'"),
    ("zero-expansion", {"recipes/tool/recipe.yaml": GOOD_RECIPE + "max_expansion: 0\n"},
     "recipes/tool/recipe.yaml", 9, "expected an integer from 1 to 100000, got 0"),
    ("overlay-undefined", {"khib.yaml": GOOD_CONFIG + "overlays: [ov]\n",
                           "ov/etc/motd.j2": "hello\n{{ image.nmae }}\n"},
     "ov/etc/motd.j2", 2, "template error: 'dict object' has no attribute 'nmae'"),
    ("overlay-syntax", {"khib.yaml": GOOD_CONFIG + "overlays: [ov]\n",
                        "ov/init.j2": "#!/bin/sh\n{% if %}\n"},
     "ov/init.j2", 2, "template error"),
    ("device-table-columns", {"khib.yaml": GOOD_CONFIG + "device_tables: [devs.txt]\n",
                              "devs.txt": "# ok\n/dev/console c 600 0 0 5 1\n"},
     "devs.txt", 2, "expected 10 columns"),
    ("file-list-type", {"khib.yaml": GOOD_CONFIG + "file_lists: [files.list]\n",
                        "files.list": "dir /etc 755 0 0\nsymlink /a b 777 0 0\n"},
     "files.list", 2, "unknown type 'symlink'"),
]


def write_case(root: Path, files: dict[str, str]) -> Path:
    defaults = {"khib.yaml": GOOD_CONFIG, "recipes/tool/recipe.yaml": GOOD_RECIPE}
    for rel, text in {**defaults, **files}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root / "khib.yaml"


@pytest.mark.parametrize(("files", "named", "line", "text"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_exits_2_with_location(tmp_path: Path, files: dict[str, str], named: str,
                                         line: int, text: str) -> None:
    config = write_case(tmp_path / "case", files)
    outdir = tmp_path / "out"
    result = khib("rootfs", "-c", config, "-o", outdir, "--dl-dir", tmp_path / "dl")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert f"{tmp_path / 'case' / named}:{line}: " in message
    assert text in message
    assert not outdir.exists()
    assert not (tmp_path / "dl").exists()


def test_dependency_cycle_names_the_cycle(tmp_path: Path) -> None:
    config = write_case(tmp_path, {
        "recipes/tool/recipe.yaml": GOOD_RECIPE + "depends: [lib]\n",
        "recipes/lib/recipe.yaml": GOOD_RECIPE.replace("name: tool", "name: lib")
        + "depends: [tool]\n",
    })
    result = khib("rootfs", "-c", config, "-o", tmp_path / "out")
    assert result.returncode == 2
    assert "dependency cycle: " in result.stderr
    assert "tool -> lib -> tool" in result.stderr or "lib -> tool -> lib" in result.stderr
    assert not (tmp_path / "out").exists()


def test_usage_error_exits_2(tmp_path: Path) -> None:
    result = khib("rootfs", "--no-such-flag")
    assert result.returncode == 2
    assert "unrecognized arguments: --no-such-flag" in result.stderr
    assert "Traceback" not in result.stderr


SETTING_NAMES = ["name", "version", "arch", "toolchain", "packages", "recipe_dirs", "overlays",
                 "device_tables", "file_lists", "compression", "compression_level", "output",
                 "mirrors", "download_dir", "source_date_epoch", "cc", "cflags"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(),
                    st.text(max_size=12), st.sampled_from(["gzip", "i386", "", "~", "[x"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.sampled_from(SETTING_NAMES), st.text(max_size=8)), inner,
                    max_size=4)), max_leaves=12)
CONFIGS = st.dictionaries(st.one_of(st.sampled_from(SETTING_NAMES), st.text(max_size=8)),
                          VALUES, max_size=6)


def run_in_process(config: Path, out: Path) -> tuple[int, str]:
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        status = main(["rootfs", "-c", str(config), "-o", str(out), "--offline",
                       "--dl-dir", str(out.parent / "dl")])
    return status, stderr.getvalue()


@settings(max_examples=150, deadline=None)
@given(st.one_of(CONFIGS.map(lambda c: {**c, "packages": ["zz-no-such-package"]}), CONFIGS,
                 st.text(max_size=200)))
@example({"recipe_dirs": ["\n"], "packages": ["zz-no-such-package"]})  # a path with a newline
def test_random_yaml_always_exits_2_with_a_location(document: object) -> None:
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "khib.yaml"
        text = document if isinstance(document, str) else yaml.safe_dump(document)
        config.write_text(text, encoding="utf-8", errors="surrogatepass")
        out = Path(folder) / "out"
        status, message = run_in_process(config, out)
        assert status == 2, message
        lines = message.strip().splitlines()
        assert len(lines) == 1, message
        assert re.match(rf"khib-build: error: {re.escape(str(config))}:\d+: ", lines[0]), message
        assert not out.exists() and not (Path(folder) / "dl").exists()
