"""Inputs a careless or hostile user writes: numbers the kernel cannot take, counts that
would exhaust memory, bytes that are not UTF-8. Each is refused where it is read, with
the file, line (and column) in one message, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import khib, write_recipe

CASES = {  # name: (the option reading the file, its line, the message)
    "uid-of-11-digits": ("--device-table", "/x f 644 99999999999 0 - - - - -",
                         "uid 99999999999 does not fit the 32-bit field"),
    "gid-unchanged": ("--device-table", "/x f 644 0 4294967295 - - - - -",
                      "gid 4294967295 means 'unchanged' to the kernel"),
    "major-overflows": ("--device-table", "/dev/x c 600 0 0 4096 0 - - -",
                        "major 4096 is above 4095"),
    "rising-minor-overflows": ("--device-table", "/dev/x b 600 0 0 8 1048570 0 1 10",
                               "minor 1048579 is above 1048575"),
    "count-of-4-billion": ("--device-table", "/dev/tty c 666 0 0 4 0 0 1 4000000000",
                           "count 4000000000: one line makes at most 10000 entries"),
    "mode-beyond-07777": ("--device-table", "/x f 177777 0 0 - - - - -",
                          "mode 177777 has bits beyond 07777"),
    "list-mode-beyond-07777": ("--file-list", "dir /d 177777 0 0",
                               "mode 177777 has bits beyond 07777"),
    "list-uid-of-11-digits": ("--file-list", "dir /d 755 99999999999 0",
                              "uid 99999999999 does not fit the 32-bit field"),
    "list-minor-overflows": ("--file-list", "nod /dev/x 600 0 0 c 1 1048576",
                             "minor 1048576 is above 1048575"),
}


def pack(tmp_path: Path, *extra: object) -> tuple[int, str, Path]:
    tree = tmp_path / "tree"
    tree.mkdir(exist_ok=True)
    image = tmp_path / "image"
    result = khib("pack", tree, "-o", image, *extra, timeout=60)
    assert "Traceback" not in result.stderr
    return result.returncode, result.stderr, image


@pytest.mark.parametrize("case", list(CASES))
def test_a_table_value_the_kernel_cannot_take_is_refused(tmp_path: Path, case: str) -> None:
    option, line, message = CASES[case]
    table = tmp_path / "table.txt"
    table.write_text(f"# a comment\n{line}\n")
    status, stderr, image = pack(tmp_path, option, table)
    assert status == 2
    assert stderr.startswith(f"khib-build: error: {table}:2: ") and message in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert not image.exists()


def test_a_table_making_more_entries_than_an_image_holds_is_refused(tmp_path: Path) -> None:
    table = tmp_path / "table.txt"
    table.write_text("".join(f"/dev/t{n}x c 600 0 0 4 0 0 1 10000\n" for n in range(101)))
    status, stderr, _ = pack(tmp_path, "--device-table", table)
    assert status == 2
    assert f"{table}:101: the table makes more than 1000000 entries" in stderr


NOT_UTF8 = b"\xff\xfe"


def test_bytes_that_are_not_utf8_are_located_in_every_text_input(tmp_path: Path) -> None:
    """A device table, a file list, a template, a recipe and a config: each names the
    file, the line and the column of the first byte that is not UTF-8."""
    table = tmp_path / "table.txt"
    table.write_bytes(b"/x f 644 0 0 - - - - -\n/y" + NOT_UTF8 + b" f 644 0 0 - - - - -\n")
    status, stderr, _ = pack(tmp_path, "--device-table", table)
    assert (status, stderr.strip()) == (2, f"khib-build: error: {table}:2:3: byte 0xff is not "
                                           "UTF-8 (text inputs are read as UTF-8)")
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"dir /d 755 0 0\ndir /e" + NOT_UTF8 + b" 755 0 0\n")
    status, stderr, _ = pack(tmp_path, "--file-list", listing)
    assert (status, f"{listing}:2:7: byte 0xff" in stderr) == (2, True)

    overlay = tmp_path / "overlay" / "etc"
    overlay.mkdir(parents=True)
    (overlay / "motd.j2").write_bytes(b"hello {{ image.name }}\n" + NOT_UTF8 + b"\n")
    write_recipe(tmp_path, "tool", version="1", license="MIT",
                 install=["mkdir -p {{ destdir }}/bin"])
    config = tmp_path / "khib.yaml"
    config.write_text("recipe_dirs: [recipes]\npackages: [tool]\noverlays: [overlay]\n")
    result = khib("rootfs", "-c", config, "-o", tmp_path / "out", timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == (f"khib-build: error: {overlay / 'motd.j2'}:2:1: byte 0xff "
                                     "is not UTF-8 (text inputs are read as UTF-8)")

    recipe = tmp_path / "recipes" / "tool" / "recipe.yaml"
    recipe.write_bytes(recipe.read_bytes() + b"# caf" + NOT_UTF8 + b"\n")
    result = khib("rootfs", "-c", config, "-o", tmp_path / "out", timeout=120)
    assert result.returncode == 2
    assert f"{recipe}:" in result.stderr and ":6: byte 0xff is not UTF-8" in result.stderr

    config.write_bytes(b"# \xe9t\xe9\n" + config.read_bytes())
    result = khib("rootfs", "-c", config, "-o", tmp_path / "out", timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(f"khib-build: error: {config}:1:3: byte 0xe9")


@pytest.mark.parametrize("argv", [
    ["rootfs", "-j", "-4"], ["rootfs", "-j", "0"], ["rootfs", "--fetch-deadline", "0"],
    ["rootfs", "--fetch-deadline", "-5"], ["rootfs", "--fetch-deadline", "nan"],
    ["fetch", "--fetch-deadline", "inf"], ["fetch", "--fetch-retries", "-1"],
    ["rootfs", "--remote-timeout", "nan"], ["kernel", "-j", "x"],
    ["boot", "--timeout", "nan"], ["boot", "--memory", "0"], ["boot", "--cpus", "0"],
    ["pack", ".", "-o", "x", "--level", "-3"], ["cache", "gc", "--max-size", "-5M"],
    ["cache", "gc", "--max-size", "nanG"],
], ids=" ".join)
def test_a_number_on_the_command_line_is_checked_where_it_is_declared(
        argv: list[str], tmp_path: Path) -> None:
    result = khib(*argv, cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_a_number_in_the_environment_is_checked_like_its_flag(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "SOURCE_DATE_EPOCH": "soon"}
    result = khib("pack", tmp_path, "-o", tmp_path / "x", env=env, timeout=60)
    assert result.returncode == 2
    assert "SOURCE_DATE_EPOCH='soon': expected an integer" in result.stderr


def test_what_the_recipe_check_accepts_later_stages_can_use(tmp_path: Path) -> None:
    """An ftp:// URL (the fetcher reads http(s) and file://) and a kernel option spelt
    with its CONFIG_ prefix are refused when the recipe is read."""
    recipe = write_recipe(tmp_path, "tool", version="1", license="MIT",
                          source={"urls": ["ftp://ftp.invalid/tool-1.tar.gz"],
                                  "sha256": "0" * 64})
    config = tmp_path / "khib.yaml"
    config.write_text("recipe_dirs: [recipes]\npackages: [tool]\n")
    result = khib("rootfs", "-c", config, "-o", tmp_path / "out", timeout=60)
    assert result.returncode == 2
    assert (f"{recipe}:6: source: urls: expected an http(s):// or file:// URL, got 'ftp:"
            in result.stderr)
    write_recipe(tmp_path, "tool", version="1", license="MIT", kernel_options=["CONFIG_KEXEC=y"])
    result = khib("rootfs", "-c", config, "-o", tmp_path / "out", timeout=60)
    assert result.returncode == 2
    assert "SYMBOL=value without the CONFIG_ prefix, e.g. KEXEC=y, got 'CONFIG_KEXEC=y'" \
        in result.stderr


def test_a_shadowed_recipe_is_reported(tmp_path: Path) -> None:
    """Two of the config's recipe dirs define one package differently: the first wins,
    with a warning naming both files. A user recipe that overrides a built-in one is a
    lint finding."""
    first = write_recipe(tmp_path / "a", "tool", version="1", license="MIT",
                         install=["mkdir -p {{ destdir }}/bin"])
    second = write_recipe(tmp_path / "b", "tool", version="2", license="MIT",
                          install=["mkdir -p {{ destdir }}/sbin"])
    config = tmp_path / "khib.yaml"
    config.write_text("recipe_dirs: [a/recipes, b/recipes]\npackages: [tool]\n")
    result = khib("rootfs", "-c", config, "-o", tmp_path / "out", "--cache-dir",
                  tmp_path / "cache", timeout=300)
    assert result.returncode == 0, result.stderr
    assert (f"warning: tool is defined differently in {first} and {second}; using {first}"
            in result.stderr)
    busybox = write_recipe(tmp_path / "a", "busybox", version="1", license="MIT",
                           install=["true"])
    result = khib("lint", "-c", config, busybox.parent, timeout=60)
    assert result.returncode == 1
    assert f"{busybox}: [shadows] overrides the built-in recipe" in result.stdout
