"""The khib command's host-testable parts: RAM ranges, the hand-off segment, info."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from khib_tools import (
    bootarea,
    cli,
    hibernate,
    image,
    jumping,
    newc,
    other,
    resume,
    status,
    system,
    window,
)

from tests.helpers import REPO, X86_64_CONFIG, fmt, khib, loads, memory

IOMEM = """00000000-00000fff : Reserved
00001000-0009fbff : System RAM
000a0000-000bffff : PCI Bus 0000:00
00100000-1ffdffff : System RAM
  01000000-01a02ff6 : Kernel code
1ffe0000-1fffffff : Reserved
"""


def test_ram_ranges_are_the_top_level_system_ram_lines() -> None:
    assert system.ram_ranges(IOMEM) == [(0x1000, 0x9fbff), (0x100000, 0x1ffdffff)]


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
    """A summary in a few lines, what the image records as text; --segments lists them."""
    memory(tmp_path / "mem", 1 << 20)
    (tmp_path / "ranges").write_text("00000000-000fffff\n")
    (tmp_path / "meta.json").write_text(
        '{"kernel": {"release": "6.1.0", "version": "#1 SMP", "build_id": "ab12"}, '
        '"ranges": [[4096, 655359], [1048576, 536739839]], "window": [268435456, 67108864]}')
    subprocess.run([core / "khib-save", "--mem", tmp_path / "mem", "--ranges",
                    tmp_path / "ranges", "-o", tmp_path / "image", "--meta",
                    tmp_path / "meta.json"], check=True, capture_output=True)
    assert cli.main(["info", str(tmp_path / "image")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{tmp_path / 'image'}: ") and "zero pages" in out[0]
    assert out[1:] == ["  kernel: Linux 6.1.0 #1 SMP (build id ab12)",
                       "  ranges: 2 ranges, 511 MiB", "  window: 256M:64M"]
    assert cli.main(["info", "--segments", str(tmp_path / "image")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert any(" zero " in line for line in out[4:]) and any(" data " in line for line in out[4:])
    assert all("crc32=" in line for line in out[4:])


def test_a_missing_disk_and_an_export_to_a_device_say_what_to_do(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["hibernate", "--device", "/dev/no-such-disk"]) == 1
    assert capsys.readouterr().err == (
        "khib: /dev/no-such-disk does not exist: attach a disk for the image (in QEMU, "
        "`khib-build boot --disk FILE` attaches FILE as /dev/vda)\n")
    (tmp_path / "image").write_bytes(b"")
    assert cli.main(["export", str(tmp_path / "image"), "/dev/null"]) == 1
    assert "/dev/null is not a regular file: an export is a core file" in \
        capsys.readouterr().err


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


RAM = [(0x1000, 0x9FBFF), (0x100000, 0x1FFDFFFF)]  # 512 MiB, as QEMU gives it


def test_a_window_under_a_memmap_reservation_is_refused() -> None:
    meminfo = "MemAvailable:     400000 kB\n"
    with pytest.raises(window.WindowError, match=r"reserved by memmap=64M\$128M.*Boot A without"):
        window.check(128 << 20, 64 << 20, RAM, "console=ttyS0 memmap=64M$128M", meminfo)
    window.check(256 << 20, 64 << 20, RAM, "console=ttyS0 memmap=64M$128M", meminfo)


def test_a_window_a_cannot_spare_is_refused() -> None:
    with pytest.raises(window.WindowError, match="A has 70 MiB available; a 64 MiB window "
                                                 "needs 80 MiB"):
        window.check(128 << 20, 64 << 20, RAM, "", "MemAvailable:      71680 kB\n")
    window.check(128 << 20, 64 << 20, RAM, "", "MemAvailable:      81920 kB\n")


@pytest.mark.parametrize(("text", "message"), [
    ("262656K:64M", r"0x10080000:0x4000000 is not in whole MiB.*e\.g\. 256M:64M"),
    ("256M:65540K", r"is not in whole MiB"),
    ("8M:64M", r"8M:64M starts below 16 MiB.*start it at 16M or above"),
    ("480M:64M", r"480M:64M is not inside one System RAM range of A's; A's RAM "
                 r"0x100000-0x1ffdffff would hold it \(--window 16M:64M fits\)"),
    ("256M:1G", r"not inside one System RAM range of A's; no RAM range of A's holds"),
])
def test_a_window_b_cannot_own_whole_is_refused(text: str, message: str) -> None:
    """B owns whole MiB: a window must be whole MiB, at 16 MiB or above, in A's RAM."""
    start, length = window.parse(text)
    with pytest.raises(window.WindowError, match=message):
        window.check(start, length, RAM, "", "MemAvailable: 400000 kB\n")


def test_the_image_must_cover_a_less_what_b_owns(core: Path, tmp_path: Path) -> None:
    """B has khib-save check its image against jump.md's contract (A's RAM less 4 KiB-640
    KiB and the window, no more, no less) before it writes anything after the data."""
    expected = hibernate.expected_cover(RAM, (128 << 20, 64 << 20), False)
    assert expected == [[0x100000, 128 << 20], [192 << 20, 0x1FFE0000]]
    # A B whose kernel kept A's memory below 640 KiB (its patch b/0001) stores that too.
    kept = hibernate.expected_cover(RAM, (128 << 20, 64 << 20), True)
    assert kept == [[0x1000, 0x9FC00], *expected]
    memory(tmp_path / "mem", 4 << 20)
    (tmp_path / "ranges").write_text("00001000-003fffff : System RAM\n")
    (tmp_path / "image").write_bytes(b"\x7fELF" + bytes(8188))  # an earlier image
    for cover, ok in (("1000-3fffff\n", True), ("1000-1fffff\n", False),
                      ("1000-1fffff\n200000-3fffff\n", False), ("", False)):
        (tmp_path / "cover").write_text(cover)
        saved = subprocess.run([core / "khib-save", "--mem", tmp_path / "mem", "--ranges",
                                tmp_path / "ranges", "--cover", tmp_path / "cover", "-o",
                                tmp_path / "image"], capture_output=True, text=True, check=False)
        assert (saved.returncode == 0) == ok, (cover, saved.stderr)
        assert ok or "would not hold exactly the memory" in saved.stderr
        assert (tmp_path / "image").read_bytes()[:4] == (b"\x7fELF" if ok else bytes(4))


def test_low_memory_comes_from_and_goes_to_what_b_kept(core: Path, tmp_path: Path) -> None:
    """--low: A's 4 KiB-640 KiB is read from B's kept copy (the file offset is the physical
    address), though --exclude lists it as B's RAM; the restore writes it back there, not
    into memory, and the running kernel's RAM below 640 KiB is then no obstacle."""
    data = memory(tmp_path / "mem", 4 << 20)
    kept = bytes(0x1000) + os.urandom(0x9F000)  # what B's kernel found there at boot
    (tmp_path / "low").write_bytes(kept)
    (tmp_path / "ranges").write_text("00001000-0009fbff : System RAM\n"
                                     "00100000-003fffff : System RAM\n")
    (tmp_path / "b-ram").write_text("00001000-0009ffff : System RAM\n"
                                    "00200000-002fffff : System RAM\n")
    saved = subprocess.run([core / "khib-save", "--mem", tmp_path / "mem", "--ranges",
                            tmp_path / "ranges", "--exclude", tmp_path / "b-ram", "--low",
                            tmp_path / "low", "-o", tmp_path / "image"],
                           capture_output=True, text=True, check=False)
    assert saved.returncode == 0, saved.stderr
    segments = [(s.paddr, s.memsz) for s in loads(tmp_path / "image")[0]]
    assert segments[0][0] == 0x1000 and (0x200000, 0x100000) not in segments
    memory(tmp_path / "target", 4 << 20)
    (tmp_path / "target-low").write_bytes(bytes(0xA0000))
    restored = subprocess.run([core / "khib-restore", tmp_path / "image", "--mem",
                               tmp_path / "target", "--low", tmp_path / "target-low",
                               "--running", tmp_path / "b-ram"],
                              capture_output=True, text=True, check=False)
    assert restored.returncode == 0, restored.stderr
    assert (tmp_path / "target-low").read_bytes()[0x1000:0x9FC00] == kept[0x1000:0x9FC00]
    target = (tmp_path / "target").read_bytes()
    assert target[:0xA0000] == data[:0xA0000]  # memory below 640 KiB untouched
    assert target[0x100000:0x200000] == data[0x100000:0x200000]
    # Without --low the same image would land in the running kernel's RAM: refused.
    refused = subprocess.run([core / "khib-restore", tmp_path / "image", "--mem",
                              tmp_path / "target", "--running", tmp_path / "b-ram"],
                             capture_output=True, text=True, check=False)
    assert refused.returncode == fmt.EXIT_UNTOUCHED, refused.stderr


def test_the_boot_area_comes_back_checked(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    with disk.open("wb") as sparse:
        sparse.truncate(64 << 20)
    area = bootarea.boot_area(b"K" * 3000, b"I" * 5000, "memmap=exactmap", (128 << 20, 64 << 20),
                              "n" * 32)
    limit = bootarea.write(str(disk), area)
    assert limit == 63 << 20  # the image may use everything below the boot area
    back = bootarea.read(str(disk))
    assert (back.kernel, back.initrd, back.cmdline, back.window, back.limit) == (
        area.kernel, area.initrd, area.cmdline, area.window, limit)
    assert back.binding() == area.binding() and back.binding()["nonce"] == "n" * 32
    assert back.binding()["kernel"] == hashlib.sha256(b"K" * 3000).hexdigest()
    with disk.open("r+b") as damaged:
        damaged.seek(limit + 10)
        damaged.write(b"X")
    with pytest.raises(bootarea.NoBootArea, match="the saved kernel does not match"):
        bootarea.read(str(disk))
    (tmp_path / "empty").write_bytes(bytes(1 << 20))
    with pytest.raises(bootarea.NoBootArea, match="has no khib boot area"):
        bootarea.read(str(tmp_path / "empty"))


def test_the_status_page_has_a_physical_address() -> None:
    """The page B writes into: page-aligned, looked up in /proc/self/pagemap (as root),
    in a locked memory file, and still there when asked again."""
    page = status.StatusPage()
    assert page.address and page.address % 4096 == 0
    assert re.fullmatch(r"0x[0-9a-f]+:[0-9a-f]{16}", page.handle)
    assert page.message() == ""
    page.chunk[page.at + status.MESSAGE_AT:page.at + status.MESSAGE_AT + 6] = b"failed"
    assert page.message() == "failed"
    page.clear()
    assert page.message() == ""
    # What khib-jump-back leaves after the message: how A finds B once it is back.
    record = b"entry=0x1890fb mailbox=0xa8fc000:0123456789abcdef kernel_code=0x1000000"
    page.chunk[page.at + fmt.STATUS_RETURN_AT:page.at + fmt.STATUS_RETURN_AT + len(record)] = record
    assert page.returned() == {"entry": "0x1890fb", "mailbox": "0xa8fc000:0123456789abcdef",
                               "kernel_code": "0x1000000"}
    page.clear()
    assert page.returned() == {}
    page.still_here()
    locked = [line for line in Path("/proc/self/smaps").read_text().split("\n")
              if line.startswith("VmFlags:")]
    assert any(" lo" in line for line in locked)  # MAP_LOCKED: never swapped out
    with pytest.raises(OSError, match="no page outside"):  # B's window: all of memory
        status.StatusPage(avoid=(0, 1 << 64))
    # A window over the whole first chunk: the page comes from a later one.
    first = status.mapped_pages("khib-probe")[1]
    outside = status.StatusPage(avoid=(min(first), max(first) + 4096))
    assert not min(first) <= outside.address <= max(first)
    page.close()  # no magic: a B that kept the address finds nothing to write to
    assert page.chunk[page.at:page.at + 4096] == bytes(4096)


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


def test_the_key_reaches_the_status_page_and_nothing_else(tmp_path: Path) -> None:
    """A key on a disk's filesystem goes into the status page, past the page cache; the
    scratch page is zeroed; a key on tmpfs is refused (its bytes are A's memory)."""
    key = bytes(range(256)) * 2
    (tmp_path / "key").write_bytes(key)
    page = status.StatusPage()
    page.put_key(str(tmp_path / "key"))
    slot = page.chunk[page.at + fmt.STATUS_KEY_AT:page.at + fmt.PAGE]
    assert int.from_bytes(slot[:4], "little") == len(key) and slot[4:4 + len(key)] == key
    assert page.chunk[:].count(key) == 1  # the scratch page holds no copy
    page.clear_key()
    assert key not in page.chunk[:]
    assert page.message() == "" and page.chunk[page.at:page.at + 8] == fmt.STATUS_MAGIC
    shm = Path("/dev/shm") / f"khib-key-{tmp_path.name}"
    shm.write_bytes(key)
    try:
        with pytest.raises(OSError, match=r"is on tmpfs: its bytes are A's memory"):
            page.put_key(str(shm))
    finally:
        shm.unlink()
    (tmp_path / "short").write_bytes(b"x" * 15)
    with pytest.raises(OSError, match="holds 15 bytes: a hibernation key is 16 to 2040"):
        page.put_key(str(tmp_path / "short"))


def test_an_image_set_aside_says_why(core: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A resume boot that refuses an image sets it aside: no tool takes it for an image,
    and each says why; the attempts khib-restore counts are read back."""
    memory(tmp_path / "mem", 1 << 20)
    (tmp_path / "ranges").write_text("00000000-000fffff\n")
    subprocess.run([core / "khib-save", "--mem", tmp_path / "mem", "--ranges",
                    tmp_path / "ranges", "-o", tmp_path / "image"], check=True,
                   capture_output=True)
    assert image.attempts(str(tmp_path / "image")) == 0
    image.count_attempt(str(tmp_path / "image"))  # a resume boot hands it over ...
    counted = subprocess.run([core / "khib-restore", tmp_path / "image", "--mem",
                              tmp_path / "mem", "--count-write"], capture_output=True,
                             text=True, check=False)  # ... and the restore begins writing
    assert counted.returncode == 0, counted.stderr
    assert image.attempts(str(tmp_path / "image")) == 1
    assert image.attempts(str(tmp_path / "image"), fmt.WRITES_AT) == 1
    image.set_aside(str(tmp_path / "image"), "this machine's RAM is not the RAM A ran with")
    assert cli.main(["info", str(tmp_path / "image")]) == 1
    assert ("no hibernation image: the one here was set aside by a resume boot (this "
            "machine's RAM is not the RAM A ran with)") in capsys.readouterr().err
    checked = subprocess.run([core / "khib-restore", tmp_path / "image", "--check"],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 1
    assert "set aside by a resume boot (this machine's RAM" in checked.stderr


def test_a_device_in_use_is_refused(tmp_path: Path) -> None:
    """khib hibernate needs a device of its own: one another holder opened exclusively
    (a mount, swap) is refused before anything is written to it."""
    (tmp_path / "disk").write_bytes(bytes(1 << 20))
    loop = subprocess.run(["losetup", "--find", "--show", tmp_path / "disk"],
                          capture_output=True, text=True, check=True).stdout.strip()
    try:
        held = os.open(loop, os.O_RDONLY | os.O_EXCL)  # as a mount holds its device
        try:
            with pytest.raises(jumping.Failure, match=f"{loop} is in use .*a device of its own"):
                hibernate.own_device(loop)
        finally:
            os.close(held)
        hibernate.own_device(loop)  # free again
        with pytest.raises(jumping.Failure, match="is not a block device"):
            hibernate.own_device(str(tmp_path / "disk"))
    finally:
        subprocess.run(["losetup", "--detach", loop], check=True)


def test_a_malformed_image_is_one_line_not_a_traceback(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A complete image's first page with notes that lie about their sizes: `khib info`
    says so in a line and exits 1."""
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<HHIQQQIHHHHHH", header, 16, 4, 62, 1, 0, 4096, 0, 0, 64, 56, 1, 0, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 4, 0, 4096 + 56, 0, 0, 28, 28, 0)
    note = struct.pack("<III", 5, 4, fmt.NOTE_SEAL) + b"KHIB\0\0\0\0" + b"\0" * 4
    (tmp_path / "image").write_bytes(bytes(header) + bytes(4032) + phdr + note)
    assert cli.main(["info", str(tmp_path / "image")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("khib: ") and err.count("\n") == 1 and "Traceback" not in err, err


@pytest.mark.parametrize(("mib", "expected"), [(512, "256M:64M"), (256, "128M:64M"),
                                               (128, "32M:64M"), (4096, "256M:64M")])
def test_the_default_window_fits_a_ram(mib: int, expected: str) -> None:
    """Without --window: 64 MiB at 256 MiB, lower where A's RAM ends sooner (QEMU's map:
    640 KiB, then RAM from 1 MiB to the top, less the firmware's last pages)."""
    ram = [(0x1000, 0x9FBFF), (0x100000, (min(mib, 3072) << 20) - 0x20001)]
    start, length = window.default(ram)
    assert f"{start >> 20}M:{length >> 20}M" == expected
    window.check(start, length, ram, "", "MemAvailable: 100000 kB\n")  # one B can own
    with pytest.raises(window.WindowError, match="holds no 64 MiB window"):
        window.default([(0x1000, 0x9FBFF), (0x100000, (64 << 20) - 1)])


def test_b_missing_is_said_before_anything_is_loaded(capsys: pytest.CaptureFixture[str]) -> None:
    """Without B's kernel and initrd (a guest booted without --with-b), one line names
    both and says how to provide them."""
    assert cli.main(["jump", "--kernel", "/nowhere/bzImage", "--initrd", "/nowhere/rootfs"]) == 1
    err = capsys.readouterr().err
    assert err == ("khib: B's kernel /nowhere/bzImage and initrd /nowhere/rootfs are missing: "
                   "boot this guest with `khib-build boot --with-b` (it puts its kernel at "
                   "/boot/bzImage and its image at /boot/khib-rootfs.gz), or give --kernel "
                   "and --initrd\n"), err


def test_again_and_unload_take_no_new_b(capsys: pytest.CaptureFixture[str]) -> None:
    """--again and --unload are about the B loaded already: options for a new one are
    refused, before anything is read or loaded."""
    assert cli.main(["jump", "--again", "--kernel", "/boot/bzImage", "--window", "256M:64M"]) == 1
    assert capsys.readouterr().err == ("khib: --kernel and --window cannot go with --again: it "
                                       "is about the B loaded already\n")
    assert cli.main(["jump", "--unload", "--b-run", "true"]) == 1
    assert "--b-run cannot go with --unload" in capsys.readouterr().err
    assert cli.main(["jump", "--again", "--deadline", "5"]) == 1  # B keeps its own
    assert "--deadline cannot go with --again" in capsys.readouterr().err


@pytest.mark.parametrize("record", [
    {},
    {"entry": "garbage", "mailbox": "0xa8fc000:0123456789abcdef"},
    {"entry": "0x1890fb; rm -rf /", "mailbox": "0xa8fc000:0123456789abcdef"},
    {"entry": "-0x1890fb", "mailbox": "0xa8fc000:0123456789abcdef"},
])
def test_a_return_record_not_as_b_writes_it_is_not_taken(
        record: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """What B left in the status page is taken only as khib-jump-back writes it: else A
    says B did not say where it is, and nothing is recorded."""
    monkeypatch.setattr(other, "STATE", tmp_path / "b.json")
    other.remember("/boot/bzImage", (128 << 20, 64 << 20), record)
    assert "khib: B did not say where it is" in capsys.readouterr().out
    assert not (tmp_path / "b.json").exists()


def test_a_b_recorded_in_another_boot_is_not_recalled(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The record names this boot: one from another (a /run that outlived a reboot) is
    dropped, whatever kexec image is loaded now."""
    monkeypatch.setattr(other, "STATE", tmp_path / "b.json")
    monkeypatch.setattr(other, "LOADED", tmp_path / "kexec_loaded")
    (tmp_path / "kexec_loaded").write_text("1\n")
    (tmp_path / "b.json").write_text(json.dumps({"boot_id": "another", "digest": "0" * 64}))
    with pytest.raises(other.Unavailable, match="recorded of B is from another boot"):
        other.recall("read")
    assert not (tmp_path / "b.json").exists()


def test_with_b_puts_the_kernel_and_image_where_khib_looks(tmp_path: Path) -> None:
    """`khib-build boot --with-b`: the image gains a segment with the kernel and the image
    itself at the paths `khib jump` and `khib hibernate` take by default."""
    from khib_build.image.listing import read_image
    from khib_build.kernel.boot import with_b

    (tmp_path / "image").write_bytes(gzip.compress(newc.archive({"etc/a": b"a"})))
    (tmp_path / "kernel").write_bytes(b"K" * 5000)
    initrd = with_b(tmp_path / "image", tmp_path / "kernel", tmp_path / "initrd", 0)
    segments = read_image(initrd)
    rows = {row.path: row for row in segments[-1].rows}
    assert rows[jumping.B_KERNEL.lstrip("/")].sha256 == hashlib.sha256(b"K" * 5000).hexdigest()
    assert rows[jumping.B_INITRD.lstrip("/")].sha256 == hashlib.sha256(
        (tmp_path / "image").read_bytes()).hexdigest()
    assert initrd.read_bytes().startswith((tmp_path / "image").read_bytes())


@pytest.mark.slow  # builds the x86_64 image (shared with the other tests)
def test_the_images_khib_runs_on_the_host(image_x86_64: Path, core: Path, tmp_path: Path) -> None:
    """`khib-build khib info|check|export`: the built image's own tools on saved images,
    here on the host; other verbs are the guest's."""
    memory(tmp_path / "mem", 1 << 20)
    (tmp_path / "ranges").write_text("00000000-000fffff\n")
    subprocess.run([core / "khib-save", "--mem", tmp_path / "mem", "--ranges",
                    tmp_path / "ranges", "-o", tmp_path / "image"], check=True,
                   capture_output=True)
    out = image_x86_64.parent
    for words, expected in ((["info", tmp_path / "image"], "zero pages"),
                            (["check", tmp_path / "image"], "the seal holds"),
                            (["export", tmp_path / "image", tmp_path / "core"], "a core of")):
        result = khib("khib", "-c", X86_64_CONFIG, "-o", out, *words)
        assert result.returncode == 0 and expected in result.stdout, result.stderr
    assert (tmp_path / "core").read_bytes()[:4] == b"\x7fELF"
    refused = khib("khib", "-c", X86_64_CONFIG, "-o", out, "hibernate")
    assert refused.returncode == 2 and "on the host, khib does info, check, export" in \
        refused.stderr


def test_a_keyed_image_without_a_key_names_where_the_key_goes(
        core: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At boot there is no --key: the refusal names the initramfs file and khib.key=."""
    memory(tmp_path / "mem", 1 << 20)
    (tmp_path / "ranges").write_text("00000000-000fffff\n")
    (tmp_path / "key").write_bytes(b"k" * 32)
    subprocess.run([core / "khib-save", "--mem", tmp_path / "mem", "--ranges",
                    tmp_path / "ranges", "-o", tmp_path / "image", "--key", tmp_path / "key"],
                   check=True, capture_output=True)
    monkeypatch.setenv("PATH", f"{core}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(resume.Refused, match=r"the image is keyed: it needs its key \(this boot "
                       r"has none: put it in the initramfs as /etc/khib/hibernate.key or name "
                       r"it with khib.key=\)"):
        resume.checked_meta(str(tmp_path / "image"), [], tmp_path / "meta.json")
