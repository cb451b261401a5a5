"""What the running kernel says of itself: its command line, RAM, CPUs, identity.

Every reading of /proc and /sys the khib tools make goes through here, so that the
command line, say, is parsed in one place.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

CMDLINE = Path("/proc/cmdline")
IOMEM = Path("/proc/iomem")
CPUS = Path("/sys/devices/system/cpu")
ONLINE = CPUS / "online"
# What B's kernel kept of A's 4 KiB-640 KiB before its boot wrote there (B's kernel
# patch, recipes/linux/patches/b/0001):
# read for the image, written by a resume; the offset is the physical address.
KEPT_LOW = Path("/sys/kernel/kexec_jump_low")


def cmdline() -> str:
    return CMDLINE.read_text()


def cmdline_arg(name: str, text: str | None = None) -> str | None:
    """The value of ``name=`` on the kernel command line (the last one given)."""
    found = re.findall(rf"(?:^|\s){re.escape(name)}=(\S+)", cmdline() if text is None else text)
    return found[-1] if found else None


def consoles() -> list[str]:
    return re.findall(r"(?:^|\s)(console=\S+)", cmdline())


def size(text: str) -> int:
    """A size as the kernel's command line writes it: 64M, 0x1000, 512K, 1G."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text and text[-1].upper() in units:
        return int(text[:-1], 0) * units[text[-1].upper()]
    return int(text, 0)


def ram_ranges(iomem: str) -> list[tuple[int, int]]:
    """Top-level "System RAM" ranges of /proc/iomem, as (start, end) inclusive."""
    return [(int(a, 16), int(b, 16)) for a, b in
            re.findall(r"^([0-9a-f]+)-([0-9a-f]+) : System RAM$", iomem, re.MULTILINE)]


def ram_listing(ranges: list[tuple[int, int]]) -> bytes:
    """RAM ranges (start, end inclusive) as /proc/iomem lists them: what B and the restore
    stage read back (khib-save --ranges, khib-restore --within)."""
    return "".join(f"{a:08x}-{b:08x} : System RAM\n" for a, b in ranges).encode()


def labelled(iomem: str, label: str) -> list[tuple[int, int]]:
    """Every range of /proc/iomem with this label, at any depth: (start, end) inclusive."""
    return [(int(a, 16), int(b, 16)) for a, b in
            re.findall(rf"^\s*([0-9a-f]+)-([0-9a-f]+) : {re.escape(label)}$", iomem,
                       re.MULTILINE)]


def kernel_code(iomem: str) -> int | None:
    """Where this kernel's "Kernel code" starts (i386 derives its PAGE_OFFSET from it)."""
    found = labelled(iomem, "Kernel code")
    return found[0][0] if found else None


def online_cpus() -> int:
    """How many CPUs are online: "0-3,5" counts five."""
    count = 0
    for part in ONLINE.read_text().strip().split(","):
        low, _, high = part.partition("-")
        count += int(high or low) - int(low) + 1
    return count


def mwait() -> bool:
    """The CPU has MONITOR/MWAIT, which x86 kernels park offline CPUs with: a write to the
    line it watches (a resume writing the memory over it) wakes such a CPU."""
    return bool(re.search(r"^flags\s*:.*\bmonitor\b", Path("/proc/cpuinfo").read_text(),
                          re.MULTILINE))


def parkable_cpus() -> bool:
    """A boot with this command line can take its other CPUs offline safely before a
    restore writes over its memory: they halt (HLT), or there are none to park."""
    return not mwait() or online_cpus() == 1 or cmdline_arg("maxcpus") == "1"


def reservations(text: str) -> list[tuple[str, int, int]]:
    """memmap=SIZE$START (or ! or #) reservations: (argument, start, end exclusive)."""
    found = []
    for match in re.finditer(r"memmap=(\w+)[$!#](\w+)", text):
        start = size(match[2])
        found.append((match[0], start, start + size(match[1])))
    return found


def kernel_identity() -> dict[str, str]:
    """This kernel's release, version string and build id (/sys/kernel/notes)."""
    uname = os.uname()
    identity = {"release": uname.release, "version": uname.version}
    notes = Path("/sys/kernel/notes")
    data = notes.read_bytes() if notes.exists() else b""
    at = 0
    while at + 12 <= len(data):
        namesz, descsz, kind = (int.from_bytes(data[at + 4 * i:at + 4 * i + 4], "little")
                                for i in range(3))
        name_end = at + 12 + (namesz + 3) // 4 * 4
        if kind == 3 and data[at + 12:at + 12 + namesz] == b"GNU\0":  # NT_GNU_BUILD_ID
            identity["build_id"] = data[name_end:name_end + descsz].hex()
        at = name_end + (descsz + 3) // 4 * 4
    return identity


def low_option() -> list[str]:
    """khib-save's and khib-restore's --low: A's memory below 640 KiB as this kernel
    keeps it, where it does."""
    return ["--low", str(KEPT_LOW)] if KEPT_LOW.exists() else []


def require(path: str, option: str) -> None:
    if not Path(path).exists():
        raise OSError(f"{path} is missing: this kernel lacks {option}")
