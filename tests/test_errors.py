"""Bad configs and recipes: exit 2, one message with file and line, no traceback, no output."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import khib

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
