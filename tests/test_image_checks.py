"""The checks of an assembled image (ELF files, Python imports), allow:, and stripping."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from elftools.elf.elffile import ELFFile

from tests.helpers import assert_ok, khib, write_recipe

# The default image's toolchain: with the user's cache, python3 is the default image's own.
I386 = {"arch": "i386",
        "toolchain": {"cc": ["gcc", "-m32"], "cflags": ["-Os", "-pipe"], "ldflags": ["-m32"]}}
HELLO = '#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n'


def c_package(root: Path, name: str, link: str = "-static",
              build: str = "{{ cc }} {{ cflags }} LINK -o NAME NAME.c {{ ldflags }}",
              **extra: object) -> None:
    """A src/ package building one C program, linked with ``link``."""
    (root / "recipes" / name / "src").mkdir(parents=True, exist_ok=True)
    (root / "recipes" / name / "src" / f"{name}.c").write_text(HELLO)
    (root / "recipes" / name / "src" / "LICENSE").write_text("MIT\n")
    write_recipe(root, name, version="1", license="MIT", license_files=["LICENSE"], **extra,
                 build=[build.replace("LINK", link).replace("NAME", name)],
                 install=[f"install -D -m 755 {name} {{{{ destdir }}}}/usr/bin/{name}"])


def image(root: Path, packages: list[str], **extra: object) -> Path:
    config = root / "img.yaml"
    config.write_text(yaml.safe_dump({**I386, "recipe_dirs": ["recipes"], "packages": packages,
                                      "compression": "none", "output": "rootfs.cpio",
                                      **extra}))
    return config


def rootfs(root: Path, config: Path, *flags: str, shared_cache: bool = False
           ) -> subprocess.CompletedProcess[str]:
    """Build with a cache of the test's own, or the user's (where python3 is built once)."""
    cache = () if shared_cache else ("--cache-dir", root / "cache")
    return khib(*flags, "rootfs", "-c", config, "-o", root / "out", *cache)


def test_a_dynamically_linked_program_is_refused_naming_its_loader(tmp_path: Path) -> None:
    c_package(tmp_path, "dyn", link="")
    result = rootfs(tmp_path, image(tmp_path, ["dyn"]))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "/usr/bin/dyn (from dyn): its loader /lib/ld-linux.so.2 is not in the image" \
        in result.stderr
    assert "needs libc.so.6, which is not in the image" in result.stderr
    assert not (tmp_path / "out" / "rootfs.cpio").exists()
    lint = khib("lint", "-c", tmp_path / "img.yaml", "-o", tmp_path / "out")
    assert lint.returncode == 0, lint.stdout  # nothing packed: nothing for lint to read


def test_a_program_for_another_arch_is_refused(tmp_path: Path) -> None:
    c_package(tmp_path, "wide", build="gcc -static -m64 -o wide wide.c")  # the host's
    result = rootfs(tmp_path, image(tmp_path, ["wide"]))
    assert result.returncode == 1, result.stderr
    assert ("/usr/bin/wide (from wide): built for 64-bit EM_X86_64, not the image's i386 "
            "(32-bit EM_386)") in result.stderr


def test_allow_turns_a_named_file_into_a_warning_and_lint_reads_the_packed_image(
        tmp_path: Path) -> None:
    c_package(tmp_path, "dyn", link="")
    config = image(tmp_path, ["dyn"], allow=[{"path": "/usr/bin/dyn",
                                              "reason": "runs on the host only"}])
    assert_ok(result := rootfs(tmp_path, config, "-v"))
    assert "checks: 2 warning(s)" in result.stderr
    assert "(allowed: runs on the host only)" in result.stderr
    lint = khib("lint", "-c", config, "-o", tmp_path / "out")
    assert lint.returncode == 0, lint.stdout
    assert "/usr/bin/dyn: [elf] warning: its loader /lib/ld-linux.so.2" in lint.stdout
    image(tmp_path, ["dyn"])  # the allowance gone, the same packed image fails lint
    lint = khib("lint", "-c", config, "-o", tmp_path / "out")
    assert lint.returncode == 1
    assert "/usr/bin/dyn: [elf] its loader /lib/ld-linux.so.2 is not in the image" in lint.stdout


def sizes_and_symbols(root: Path, strip: bool) -> tuple[int, bool]:
    c_package(root, "hello", strip=strip)
    assert_ok(rootfs(root, image(root, ["hello"])))
    binary = root / "out" / "rootfs" / "usr" / "bin" / "hello"
    with binary.open("rb") as handle:
        symbols = ELFFile(handle).get_section_by_name(".symtab") is not None
    return binary.stat().st_size, symbols


def test_programs_are_stripped_unless_the_recipe_keeps_symbols(tmp_path: Path) -> None:
    kept, kept_symbols = sizes_and_symbols(tmp_path / "kept", strip=False)
    stripped, stripped_symbols = sizes_and_symbols(tmp_path / "stripped", strip=True)
    assert kept_symbols and not stripped_symbols
    assert stripped < kept * 0.95, (stripped, kept)  # 741,552 -> 673,752 bytes here
    run = subprocess.run([tmp_path / "stripped" / "out" / "rootfs" / "usr" / "bin" / "hello"],
                         capture_output=True, text=True, check=True)
    assert run.stdout == "hello\n"


@pytest.mark.slow
def test_python_code_importing_an_absent_extension_is_refused(tmp_path: Path) -> None:
    """sqlite3 is in the standard library, its _sqlite3 is not built: an unguarded import
    fails the build at its line; a guarded one is a warning."""
    src = tmp_path / "recipes" / "usesql" / "src" / "usesql"
    src.mkdir(parents=True)
    (src / "__init__.py").write_text('"""Uses sqlite3."""\nimport os\n\nimport sqlite3\n')
    guarded = tmp_path / "recipes" / "maybesql" / "src" / "maybesql"
    guarded.mkdir(parents=True)
    (guarded / "__init__.py").write_text(
        "try:\n    import sqlite3\nexcept ImportError:\n    sqlite3 = None\n")
    for name in ("usesql", "maybesql"):
        write_recipe(tmp_path, name, version="1", license="MIT", kind="python",
                     depends=["python3"])
    result = rootfs(tmp_path, image(tmp_path, ["usesql"]), shared_cache=True)
    assert result.returncode == 1, result.stderr
    assert ("/usr/lib/python3.11/site-packages/usesql/__init__.py (from usesql): line 4: "
            "import sqlite3 fails: imports sqlite3.dbapi2") in result.stderr
    assert "_sqlite3 is a C extension the image's interpreter lacks" in result.stderr
    assert_ok(result := rootfs(tmp_path, image(tmp_path, ["maybesql"]), "-v",
                               shared_cache=True))
    assert ("maybesql/__init__.py (from maybesql): line 2: sqlite3 is absent (a guarded "
            "import)") in result.stderr
