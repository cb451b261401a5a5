"""The khib command's host-testable parts: RAM ranges, the hand-off segment, info."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from khib_tools import bootarea, cli, image, newc, status
from tests.helpers import REPO, memory

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


def test_info_describes_a_saved_image(core: Path, tmp_path: Path,
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


def test_info_says_why_there_is_no_image(core: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A save that never finished, and an image a resume has used, are no images."""
    (tmp_path / "blank").write_bytes(bytes(1 << 20))
    assert cli.main(["info", str(tmp_path / "blank")]) == 1
    assert "no complete image (a save did not finish" in capsys.readouterr().err
    memory(tmp_path / "mem", 1 << 20)
    (tmp_path / "ranges").write_text("00000000-000fffff\n")
    (tmp_path / "meta.json").write_text('{"entry": "0x1bf0fb"}')
    subprocess.run([core / "khib-save", "--mem", tmp_path / "mem", "--ranges",
                    tmp_path / "ranges", "-o", tmp_path / "image", "--meta",
                    tmp_path / "meta.json"], check=True, capture_output=True)
    assert cli.main(["info", str(tmp_path / "image")]) == 0
    assert "  entry: 0x1bf0fb" in capsys.readouterr().out
    image.mark(str(tmp_path / "image"), image.USED_MAGIC)
    assert cli.main(["info", str(tmp_path / "image")]) == 1
    assert "no hibernation image: the one here was used" in capsys.readouterr().err


def test_a_window_under_a_memmap_reservation_is_refused() -> None:
    meminfo = "MemAvailable:     400000 kB\n"
    with pytest.raises(cli.Failure, match=r"reserved by memmap=64M\$128M.*Boot A without it"):
        cli.check_window(128 << 20, 64 << 20, "console=ttyS0 memmap=64M$128M", meminfo)
    cli.check_window(256 << 20, 64 << 20, "console=ttyS0 memmap=64M$128M", meminfo)


def test_a_window_a_cannot_spare_is_refused() -> None:
    with pytest.raises(cli.Failure, match="A has 70 MiB available; a 64 MiB window needs "
                                          "80 MiB"):
        cli.check_window(128 << 20, 64 << 20, "", "MemAvailable:      71680 kB\n")
    cli.check_window(128 << 20, 64 << 20, "", "MemAvailable:      81920 kB\n")


def test_the_boot_area_comes_back_checked(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    with disk.open("wb") as sparse:
        sparse.truncate(64 << 20)
    area = bootarea.BootArea(b"K" * 3000, b"I" * 5000, "memmap=exactmap", (128 << 20, 64 << 20),
                             0)
    limit = bootarea.write(str(disk), area)
    assert limit == 63 << 20  # the image may use everything below the boot area
    back = bootarea.read(str(disk))
    assert (back.kernel, back.initrd, back.cmdline, back.window, back.limit) == (
        area.kernel, area.initrd, area.cmdline, area.window, limit)
    with disk.open("r+b") as damaged:
        damaged.seek(limit + 10)
        damaged.write(b"X")
    with pytest.raises(bootarea.NoBootArea, match="the saved kernel does not match"):
        bootarea.read(str(disk))
    (tmp_path / "empty").write_bytes(bytes(1 << 20))
    with pytest.raises(bootarea.NoBootArea, match="has no khib boot area"):
        bootarea.read(str(tmp_path / "empty"))


def test_the_status_page_has_a_physical_address(tmp_path: Path) -> None:
    """The page B writes into: page-aligned, looked up in /proc/self/pagemap (as root)."""
    page = status.StatusPage(folder=tmp_path)
    assert page.address and page.address % 4096 == 0
    assert re.fullmatch(r"0x[0-9a-f]+:[0-9a-f]{16}", page.handle)
    assert page.message() == ""
    page.chunk[page.at + status.MESSAGE_AT:page.at + status.MESSAGE_AT + 6] = b"failed"
    assert page.message() == "failed"
    assert not list(tmp_path.iterdir())  # the mapping keeps the page, not the file
    with pytest.raises(OSError, match="no page outside"):  # B's window: all of memory
        status.StatusPage(avoid=(0, 1 << 64), folder=tmp_path)
    # A window over the whole first chunk: the page comes from a later one.
    first = status.mapped_pages(tmp_path / "probe")[1]
    outside = status.StatusPage(avoid=(min(first), max(first) + 4096), folder=tmp_path)
    assert not min(first) <= outside.address <= max(first)


def test_info_into_a_pipe_closed_early_says_nothing(core: Path, tmp_path: Path) -> None:
    """``khib info IMAGE | head -n 1``: one line out, no complaint about the pipe."""
    memory(tmp_path / "mem", 4 << 20)
    (tmp_path / "ranges").write_text("00000000-003fffff\n")
    subprocess.run([core / "khib-save", "--mem", tmp_path / "mem", "--ranges",
                    tmp_path / "ranges", "-o", tmp_path / "image"], check=True,
                   capture_output=True)
    khib = f"{sys.executable} -c 'import sys; from khib_tools.cli import main; sys.exit(main())'"
    result = subprocess.run(f"{khib} info {tmp_path / 'image'} | head -c 1", shell=True,
                            capture_output=True, text=True, check=False,
                            env={"PYTHONPATH": str(REPO / "recipes" / "khib-tools" / "src")})
    assert result.stdout == str(tmp_path / "image")[0]
    assert result.stderr == ""
