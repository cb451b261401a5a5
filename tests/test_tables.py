"""Device tables and file lists: the same path defined twice must agree."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import assert_ok, build_greet, khib


def test_conflicting_definitions_name_both_lines(tmp_path: Path) -> None:
    (tmp_path / "tree").mkdir()
    first = tmp_path / "first.txt"
    second = tmp_path / "second.txt"
    first.write_text("# devices\n/dev/console c 600 0 0 5 1 - - -\n")
    second.write_text("\n/dev/console c 620 0 5 5 1 - - -\n")
    result = khib("pack", tmp_path / "tree", "-o", tmp_path / "image",
                  "--device-table", first, "--device-table", second)
    assert result.returncode == 2
    assert f"{second}:2: /dev/console is defined differently at {first}:2" in result.stderr
    assert not (tmp_path / "image").exists()


def test_identical_definitions_in_two_tables_agree(tmp_path: Path) -> None:
    (tmp_path / "tree").mkdir()
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text("/dev/null c 666 0 0 1 3 - - -\n")
    assert_ok(khib("pack", tmp_path / "tree", "-o", tmp_path / "image",
                   "--device-table", tmp_path / "a.txt", "--device-table", tmp_path / "b.txt"))
    listing = khib("inspect", tmp_path / "image").stdout
    assert "crw-rw-rw-     0     0        1,3 dev/null" in listing


def test_file_list_and_device_table_conflict(tmp_path: Path) -> None:
    (tmp_path / "tree").mkdir()
    (tmp_path / "table").write_text("/etc d 755 0 0 - - - - -\n")
    (tmp_path / "list").write_text("dir /etc 700 0 0\n")
    result = khib("pack", tmp_path / "tree", "-o", tmp_path / "image", "--device-table",
                  tmp_path / "table", "--file-list", tmp_path / "list")
    assert result.returncode == 2
    assert f"{tmp_path / 'list'}:1: /etc is defined differently at {tmp_path / 'table'}:1" \
        in result.stderr


def test_recipe_names_its_own_tables(tmp_path: Path) -> None:
    files = tmp_path / "recipes" / "greet" / "files"
    files.mkdir(parents=True)
    (files / "perms.txt").write_text("/bin/greet f 4750 0 10 - - - - -\n")
    (files / "nodes.list").write_text("nod /dev/kmsg 644 0 0 c 1 11\n")
    listing = build_greet(tmp_path, device_tables=["files/perms.txt"],
                          file_lists=["files/nodes.list"])
    assert "-rwsr-x---     0    10         25 bin/greet" in listing
    assert "crw-r--r--     0     0       1,11 dev/kmsg" in listing
