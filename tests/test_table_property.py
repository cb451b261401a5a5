"""Property: a device-table or file-list line of extreme values either packs into headers
that ``khib-build inspect``, GNU cpio and bsdtar all read back exactly and that the
kernel's unpacker takes, or is refused with exit 2 and a file:line message.

KHIB_PROPERTY_EXAMPLES sets the examples per suite (200 by default)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from khib_build.cli import main
from khib_build.image import limits
from khib_build.image.listing import read_image

EXAMPLES = int(os.environ.get("KHIB_PROPERTY_EXAMPLES", "200"))
TYPE = {"f": stat.S_IFREG, "d": stat.S_IFDIR, "c": stat.S_IFCHR, "b": stat.S_IFBLK,
        "p": stat.S_IFIFO, "s": stat.S_IFSOCK}


def mostly(valid: list[object], extreme: list[object]) -> st.SearchStrategy[object]:
    """A value that is valid about six times in seven."""
    return st.sampled_from(valid * (2 * len(extreme)) + extreme)


MODES = mostly(["0", "644", "755", "7777", "1777", "4750"], ["10000", "177777", "9", "-1"])
IDS = mostly(["0", "1", "65534", str(limits.ID_MAX)],
             [str(limits.FIELD_MAX), str(2**32), "99999999999", "-1", "x"])
MAJORS = mostly(["0", "1", "4095"], ["4096", str(2**32)])
MINORS = mostly(["0", "1", str(limits.MINOR_MAX)], [str(limits.MINOR_MAX + 1), "99999999999"])
COUNTS = mostly(["-", "0", "1", "3", "50"], ["10001", "4000000000", "-2"])
NAMES = st.text("abcxyz019._-", min_size=1, max_size=12).filter(lambda n: n not in (".", ".."))


@dataclass(frozen=True)
class Want:
    """One entry a line asks for."""

    path: str
    mode: int  # type and permission bits
    uid: int
    gid: int
    rdev: tuple[int, int] = (0, 0)


@st.composite
def table_lines(draw: st.DrawFn) -> tuple[str, list[Want]]:
    kind = draw(st.sampled_from("fdcbp"))
    name = "dev/" + draw(NAMES)
    mode, uid, gid = draw(MODES), draw(IDS), draw(IDS)
    major, minor = (draw(MAJORS), draw(MINORS)) if kind in "cb" else ("-", "-")
    start, inc = draw(st.sampled_from(["0", "1", "7"])), draw(st.sampled_from(["0", "1", "3"]))
    count = draw(COUNTS) if kind in "cb" else "-"
    line = f"/{name} {kind} {mode} {uid} {gid} {major} {minor} {start} {inc} {count}"
    wants = []
    with contextlib.suppress(ValueError):  # (what is not a number is refused anyway)
        bits = TYPE[kind] | int(mode, 8)
        rdev = (int(major), int(minor)) if kind in "cb" else (0, 0)
        if kind in "cb" and count not in ("-", "0"):
            if not 0 < int(count) <= limits.TABLE_LINE_ENTRIES:
                raise ValueError(count)  # refused before anything is made
            wants = [Want(f"{name}{int(start) + i}", bits, int(uid), int(gid),
                          (rdev[0], rdev[1] + i * int(inc))) for i in range(int(count))]
        else:
            wants = [Want(name, bits, int(uid), int(gid), rdev)]
    return line, wants


@st.composite
def list_lines(draw: st.DrawFn) -> tuple[str, list[Want]]:
    kind = draw(st.sampled_from(["dir", "nod", "pipe", "sock", "slink"]))
    name = "d/" + draw(NAMES)
    mode, uid, gid = draw(MODES), draw(IDS), draw(IDS)
    fields = {"dir": "", "pipe": "", "sock": "", "slink": "",
              "nod": f" {draw(st.sampled_from('cb'))} {draw(MAJORS)} {draw(MINORS)}"}[kind]
    middle = " target" if kind == "slink" else ""
    line = f"{kind} /{name}{middle} {mode} {uid} {gid}{fields}"
    wants = []
    with contextlib.suppress(ValueError, IndexError):
        bits = {"dir": stat.S_IFDIR, "pipe": stat.S_IFIFO, "sock": stat.S_IFSOCK,
                "slink": stat.S_IFLNK}.get(kind) or TYPE[fields.split()[0]]
        rdev = (int(fields.split()[1]), int(fields.split()[2])) if kind == "nod" else (0, 0)
        wants = [Want(name, bits | int(mode, 8), int(uid), int(gid), rdev)]
    return line, wants


LISTED = re.compile(r"^(?P<perms>\S{10})\s+\d+\s+(?P<uid>\d+)\s+(?P<gid>\d+)\s+"
                    r"(?:(?P<major>\d+),\s*(?P<minor>\d+)|\d+)\s+\w{3}\s+\d+\s+\S+\s+"
                    r"(?P<name>\S+)")


def listed(tool: str, image: Path) -> dict[str, tuple[str, int, int, tuple[int, int]]]:
    """Each entry as GNU cpio or bsdtar lists it: mode string, uid, gid, device."""
    command = (["cpio", "-itv", "--numeric-uid-gid", "--quiet"] if tool == "cpio"
               else ["bsdtar", "-tvf", str(image), "--numeric-owner"])
    text = subprocess.run(command, input=image.read_bytes() if tool == "cpio" else None,
                          capture_output=True, check=True).stdout.decode()
    found = {}
    for line in text.splitlines():
        match = LISTED.match(line)
        assert match, line
        rdev = (int(match["major"]), int(match["minor"])) if match["major"] else (0, 0)
        found[match["name"]] = (match["perms"], int(match["uid"]), int(match["gid"]), rdev)
    return found


def pack(folder: Path, option: str, line: str) -> tuple[int, str, Path, Path]:
    (folder / "tree").mkdir()
    table = folder / "table"
    table.write_text(f"# one line\n{line}\n")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = main(["pack", str(folder / "tree"), "-o", str(folder / "image"), "--compress",
                       "none", option, str(table)])
    return status, err.getvalue(), table, folder / "image"


def check(option: str, line: str, wants: list[Want]) -> bool:
    """One line through the packer and the three readers; True if it was accepted."""
    with tempfile.TemporaryDirectory(prefix="khib-property-") as folder:
        return checked(Path(folder), option, line, wants)


def checked(folder: Path, option: str, line: str, wants: list[Want]) -> bool:
    status, stderr, table, image = pack(folder, option, line)
    if status != 0:
        assert status == 2, stderr
        assert stderr.startswith(f"khib-build: error: {table}:2: "), stderr
        assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
        assert not image.exists()
        return False
    ours = {row["path"]: row for listing in read_image(image)
            for row in listing.as_dict()["entries"]}
    cpio, bsdtar = listed("cpio", image), listed("bsdtar", image)
    assert wants
    for want in wants:
        row = ours[want.path]
        assert (row["mode"], row["uid"], row["gid"], tuple(row["rdev"])) == \
            (want.mode, want.uid, want.gid, want.rdev)
        assert row["uid"] <= limits.ID_MAX and row["gid"] <= limits.ID_MAX
        assert row["rdev"][0] <= limits.MAJOR_MAX and row["rdev"][1] <= limits.MINOR_MAX
        shown = (stat.filemode(want.mode), want.uid, want.gid, want.rdev)
        assert cpio[want.path] == shown and bsdtar[want.path] == shown
    return True


def run_suite(lines: st.SearchStrategy[tuple[str, list[Want]]], option: str) -> None:
    accepted = []

    @settings(max_examples=EXAMPLES, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(lines)
    def one(case: tuple[str, list[Want]]) -> None:
        accepted.append(check(option, *case))

    one()
    assert sum(accepted) * 3 >= len(accepted), f"{sum(accepted)} of {len(accepted)} valid"
    print(f"{option}: {sum(accepted)} of {len(accepted)} lines accepted")


def test_device_table_lines_pack_exactly_or_are_refused() -> None:
    run_suite(table_lines(), "--device-table")


def test_file_list_lines_pack_exactly_or_are_refused() -> None:
    run_suite(list_lines(), "--file-list")
