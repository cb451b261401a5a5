"""B's window: the memory of A's that B runs in while A is frozen.

kexec-tools backs the window's content up into A's free pages and swaps it back when B
returns, so the window needs no reservation; but B owns every byte of it (and of the
whole MiB it starts in: B's memmap= counts in MiB), so it must be whole MiB, lie in one
System RAM range of A's, keep clear of A's first 16 MiB (which B leaves to A: its
kernel, its control page, its VMCOREINFO) and of A's memmap= reservations, and A must be
able to spare it.
"""

from __future__ import annotations

import re

from khib_tools.system import reservations, size

MiB = 1 << 20
LOWEST = 16 * MiB  # B keeps A's 1-16 MiB (crashkernel=15M@1M) and takes 0-1 MiB
HEADROOM = 16 * MiB  # free RAM A needs beyond the window while B runs


class WindowError(Exception):
    """A window B cannot use: the message names the fix."""


SIZE = 64 * MiB  # the default window's size: B's kernel, its image, room to save A
STARTS = (256, 128, 64, 32, 16)  # MiB: the default window's start, the first that fits


def default(ram: list[tuple[int, int]]) -> tuple[int, int]:
    """The window khib takes when none is given: 64 MiB at 256 MiB, or lower where A's RAM
    ends sooner (a 256 MiB guest gets 128M:64M); the first start whose window lies inside
    one System RAM range of A's."""
    for start in STARTS:
        if any(low <= start * MiB and start * MiB + SIZE - 1 <= high for low, high in ram):
            return start * MiB, SIZE
    raise WindowError("A's RAM holds no 64 MiB window at 16 MiB or above: give --window")


def parse(text: str) -> tuple[int, int]:
    """--window START:SIZE, as (start, length) in bytes."""
    start, _, length = text.partition(":")
    try:
        return size(start), size(length)
    except ValueError:
        raise WindowError(f"--window {text}: expected START:SIZE, e.g. 256M:64M") from None


def check(start: int, length: int, ram: list[tuple[int, int]], cmdline: str,
          meminfo: str) -> None:
    """Refuse a window B cannot own without taking A's live memory with it."""
    name = f"{start:#x}:{length:#x}" if (start | length) % MiB else \
        f"{start >> 20}M:{length >> 20}M"
    if start % MiB or length % MiB or not length:
        raise WindowError(f"the window {name} is not in whole MiB: B's memmap= would own "
                          "the rest of its last MiB, which kexec does not back up. Give "
                          "--window START:SIZE in MiB, e.g. 256M:64M")
    if start < LOWEST:
        raise WindowError(f"the window {name} starts below 16 MiB, which B leaves to A "
                          "(its kernel, its kexec control page): start it at 16M or above")
    for argument, low, high in reservations(cmdline):
        if low < start + length and start < high:
            raise WindowError(f"the window {name} lies in memory reserved by {argument}: "
                              "kexec cannot load B there (\"Could not find a free area of "
                              "memory\"). Boot A without it (the window needs no "
                              "reservation: kexec backs it up) or choose another --window")
    if not any(low <= start and start + length - 1 <= high for low, high in ram):
        fits = [(low, high) for low, high in ram if high - max(low, LOWEST) + 1 >= length]
        hint = "; no RAM range of A's holds a window that large"
        if fits:
            low = max(fits[0][0], LOWEST + MiB - 1) // MiB * MiB
            hint = (f"; A's RAM {fits[0][0]:#x}-{fits[0][1]:#x} would hold it (--window "
                    f"{low >> 20}M:{length >> 20}M fits)")
        raise WindowError(f"the window {name} is not inside one System RAM range of A's"
                          f"{hint}")
    available = re.search(r"MemAvailable:\s+(\d+) kB", meminfo)
    if available and int(available[1]) << 10 < length + HEADROOM:
        raise WindowError(f"A has {int(available[1]) >> 10} MiB available; a {length >> 20} "
                          f"MiB window needs {(length + HEADROOM) >> 20} MiB while B runs: "
                          "free memory or choose a smaller --window")
