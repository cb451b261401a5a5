"""B's memory from A, once B has jumped back: its core, bytes written into it, entering B
again, and unloading it.

B's kexec image stays loaded after the jump back, and B's memory with it: kexec swapped
each page of the window with the page A's kernel had allocated for it, so B's pages are
in those until A enters B again (``khib jump --again``) or unloads it (``--unload``).
``khib-other`` (the C core) reads the image's page list from A's kexec control page,
which B names on its way back (its ``kexec_jump_back_entry=``, in A's status page), and
reads or writes B's pages through ``/dev/mem``, once it has checked that the list is one
the kernel makes and that every page of it is still the loaded image's. What A learnt
when B came back is kept in ``/run/khib/b.json``, with the list's digest and this boot's
id: nothing is read or written once the loaded image is not that B any more.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

from khib_tools import format as fmt
from khib_tools import kexec

STATE = Path("/run/khib/b.json")
LOADED = Path("/sys/kernel/kexec_loaded")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
# What B's khib-jump-back says on its way back (its NAME=VALUE words): anything else is
# not taken.
RETURNED = {"entry": r"0x[0-9a-f]+",
            "mailbox": rf"0x[0-9a-f]+:[0-9a-f]{{{fmt.MAILBOX_NONCE}}}",
            "vmcoreinfo": r"0x[0-9a-f]+:0x[0-9a-f]+", "kernel_code": r"0x[0-9a-f]+"}


class Unavailable(Exception):
    """B's memory cannot be read or written, or B entered: the message says why."""


def khib_other(state: dict[str, object], *action: str) -> str:
    """Run khib-other on the B that ``state`` describes; its output (its complaint raised
    as Unavailable)."""
    start, length = state["window"]  # type: ignore[misc]
    result = subprocess.run(["khib-other", "--control-page", f"{state['control_page']:#x}",
                             "--window", f"{start:#x}:{length:#x}",
                             *(["--digest", str(state["digest"])] if "digest" in state else []),
                             *action], capture_output=True, text=True, check=False)
    if result.returncode:
        raise Unavailable(result.stderr.strip() or f"khib-other exited {result.returncode}")
    if result.stderr:
        print(result.stderr.strip(), flush=True)
    return result.stdout.strip()


def loaded() -> bool:
    """Whether a kexec image is loaded."""
    return LOADED.exists() and LOADED.read_text().strip() == "1"


def forget() -> None:
    """No B to come back to (another image is being loaded, or B was unloaded)."""
    STATE.unlink(missing_ok=True)


def remember(kernel: str, window: tuple[int, int], returned: dict[str, str],
             digest: str | None = None) -> None:
    """What B said on its way back, and the loaded image's page list as it is now: the
    list recorded before (``digest``) when B was entered again, which must not change."""
    forget()
    said = {key: value for key, value in returned.items()
            if key in RETURNED and re.fullmatch(RETURNED[key], value)}
    if "entry" not in said:
        print("khib: B did not say where it is (its khib-jump-back is older, or what it "
              "left is not a record): its memory cannot be read from here, nor B entered "
              "again; `khib jump --unload` frees it", flush=True)
        return
    if "mailbox" not in said:
        print("khib: B named no mailbox (its page kept moving as it jumped back): B cannot "
              "be entered again", flush=True)
    state: dict[str, object] = {
        "kernel": kernel, "window": list(window), "boot_id": BOOT_ID.read_text().strip(),
        "control_page": int(said["entry"], 16) & -fmt.PAGE,
        **{key: value for key, value in said.items() if key != "entry"},
        **({"digest": digest} if digest else {})}
    try:
        listed = dict(word.split("=", 1) for word in khib_other(state, "list").split())
    except Unavailable as exc:
        print(f"khib: B's memory cannot be read from here ({exc}): B cannot be entered again; "
              "`khib jump --unload` frees it", flush=True)
        return
    state.update(digest=listed["digest"], pages=int(listed["pages"]))
    STATE.parent.mkdir(parents=True, exist_ok=True)
    fd, part = tempfile.mkstemp(dir=STATE.parent, prefix=".b-")
    with os.fdopen(fd, "w") as handle:
        json.dump(state, handle)
    os.replace(part, STATE)


def recall(doing: str) -> dict[str, object]:
    """The B that jumped back last, if it is still loaded; else why not."""
    if not loaded():
        forget()
        raise Unavailable(f"no B to {doing}: no kexec image is loaded (`khib jump --unload` "
                          "ended it, or none was): start one with `khib jump`")
    if not STATE.exists():
        raise Unavailable(f"no B to {doing}: the kexec image loaded is not one that jumped back "
                          "to this kernel through `khib jump`")
    state: dict[str, object] = json.loads(STATE.read_text())
    if state.get("boot_id") != BOOT_ID.read_text().strip():
        forget()
        raise Unavailable(f"no B to {doing}: what khib recorded of B is from another boot")
    return state


def core(args: argparse.Namespace) -> int:
    """B's memory as an ELF core (PT_LOADs at B's physical addresses, B's VMCOREINFO)."""
    state = recall("read")
    notes = [arg for key in ("vmcoreinfo", "kernel_code") if key in state
             for arg in (f"--{key.replace('_', '-')}", str(state[key]))]
    print(khib_other(state, "core", args.output, *notes), flush=True)
    return 0


def poke(args: argparse.Namespace) -> int:
    """FILE's bytes into B's memory at PHYS, which must lie in B's window."""
    print(khib_other(recall("write to"), "poke", f"{args.phys:#x}", args.file), flush=True)
    return 0


def send_request(state: dict[str, object], handle: str, command: str | None) -> None:
    """Into B's mailbox, checked to be there first: A's next status page, and the command
    B runs this time (its own when None)."""
    if "mailbox" not in state:
        raise Unavailable("B named no mailbox when it came back: B cannot be called again; "
                          "`khib jump --unload` ends it")
    address, nonce = str(state["mailbox"]).split(":")
    request = fmt.MAILBOX_MAGIC + nonce.encode() + f"{handle}\n{command or ''}".encode() + b"\0"
    if len(request) > fmt.PAGE:
        raise Unavailable("--b-run is too long for B's mailbox (one page)")
    with tempfile.NamedTemporaryFile(prefix="khib-request-") as handle_file:
        handle_file.write(request)
        handle_file.flush()
        try:
            khib_other(state, "poke", address, handle_file.name, "--same",
                       str(fmt.MAILBOX_REQUEST_AT))
        except Unavailable as exc:
            if "not what was expected" not in str(exc):
                raise
            raise Unavailable("B's mailbox is gone (a kexec -e entered B without khib since "
                              "it came back, and B went straight back): B cannot be called "
                              "again; `khib jump --unload` ends it") from exc


def free_memory() -> tuple[int, int]:
    """Bytes free: MemFree, and MemFree with the pages on the per-CPU free lists (which
    MemFree leaves out), the per-CPU counters folded in first."""
    with contextlib.suppress(OSError):
        Path("/proc/sys/vm/stat_refresh").write_text("1")
    found = re.search(r"^MemFree: +(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
    listed = sum(int(count) for count in re.findall(r"^\s+count:\s+(\d+)$",
                                                     Path("/proc/zoneinfo").read_text(),
                                                     re.MULTILINE))
    free = int(found[1]) << 10 if found else 0
    return free, free + listed * fmt.PAGE


def unload(_args: argparse.Namespace) -> int:
    """Unload B (kexec -u): the pages that held its image are A's again."""
    if not loaded():
        forget()
        print("khib: no kexec image is loaded: nothing to unload", flush=True)
        return 0
    print(f"khib: unloaded {unload_image()}", flush=True)
    return 0


def unload_image() -> str:
    """kexec -u; what it unloaded (B, and its memory, or another image) and what that
    freed, as words."""
    what = "a kexec image that is no B of khib jump's"
    if STATE.exists():
        state = json.loads(STATE.read_text())
        try:
            pages = int(dict(word.split("=", 1)
                             for word in khib_other(state, "list").split())["pages"])
            what = (f"B (B's memory: {pages * fmt.PAGE >> 20} MiB in {pages} pages; its "
                    f"kernel {state['kernel']})")
        except Unavailable as exc:
            what = f"a kexec image that is not the B that came back ({exc})"
    before = free_memory()
    done = kexec.run("kexec", "-u")
    if done.returncode or loaded():
        raise Unavailable(f"kexec -u failed: {done.stderr.strip() or 'the image is still loaded'}")
    forget()
    after = free_memory()
    return (f"{what}: {(after[1] - before[1]) / (1 << 20):.1f} MiB free again (MemFree rose "
            f"by {(after[0] - before[0]) / (1 << 20):.1f} MiB; it leaves out the per-CPU "
            "free lists)")
