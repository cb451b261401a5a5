"""The khib command's host-testable parts: RAM ranges, the hand-off segment, info."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_core import core, memory  # noqa: F401 (a fixture)

sys.path.insert(0, str(REPO / "recipes" / "khib-tools" / "src"))
from khib_tools import cli, newc

IOMEM = """00000000-00000fff : Reserved
00001000-0009fbff : System RAM
000a0000-000bffff : PCI Bus 0000:00
00100000-1ffdffff : System RAM
  01000000-01a02ff6 : Kernel code
1ffe0000-1fffffff : Reserved
"""


def test_ram_ranges_are_the_top_level_system_ram_lines() -> None:
    assert cli.ram_ranges(IOMEM) == [(0x1000, 0x9fbff), (0x100000, 0x1ffdffff)]


def test_the_hand_off_segment_is_a_cpio_others_read(tmp_path: Path) -> None:
    data = newc.archive({"khib/ranges": b"00001000-0009fbff : System RAM\n",
                         "khib/jump.json": b'{"window": [1, 2]}'})
    (tmp_path / "seg.cpio").write_bytes(data)
    listing = subprocess.run(["cpio", "-itv", "-F", tmp_path / "seg.cpio"],
                             capture_output=True, text=True, check=True).stdout
    assert [line.split()[-1] for line in listing.splitlines()] == [
        "khib", "khib/jump.json", "khib/ranges"]
    subprocess.run(["cpio", "-idm", "-F", tmp_path / "seg.cpio"], cwd=tmp_path, check=True,
                   capture_output=True)
    assert (tmp_path / "khib" / "ranges").read_text().startswith("00001000-0009fbff")


def test_info_describes_a_saved_image(core: Path, tmp_path: Path,  # noqa: F811
                                      capsys: pytest.CaptureFixture[str]) -> None:
    memory(tmp_path / "mem", 1 << 20)
    (tmp_path / "ranges").write_text("00000000-000fffff\n")
    subprocess.run([core / "khib-save", "--mem", tmp_path / "mem", "--ranges",
                    tmp_path / "ranges", "-o", tmp_path / "image"], check=True,
                   capture_output=True)
    assert cli.main(["info", str(tmp_path / "image")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{tmp_path / 'image'}: ") and "zero pages" in out[0]
    assert any(" zero " in line for line in out[1:]) and any(" data " in line for line in out[1:])
    assert all("crc32=" in line for line in out[1:])
