"""A resume boot (``khib.resume=DEV``): check everything, then put A back and enter it.

The first stage runs where the firmware put it, in A's RAM: khib's own image, or a
distribution's initramfs before it mounts the root (``khib resume --boot``, from
/etc/khib.conf's DEVICE), on one CPU (it takes the others offline). It finds the image,
refuses what it cannot resume -- and sets that image aside, as swsusp resets its signature, so
that the normal boot that follows never leaves a resumable image behind a changed
system -- has the C core check the whole image and hand over what it records, compares
the boot area with what the image sealed, and loads the saved B into B's window with the
key and this machine's RAM appended (``khib.stage=restore``). That stage writes A back
(the C core compares each block with the digest the first stage's check kept for it
before a byte of it is written: the image is read twice in all), marks the image used, leaves
"resumed" in A's status page and enters A. If nothing was written it sets the image
aside and returns to the first stage, which boots normally; once writing began it never
returns there (the first stage's memory is A's by then): it tries once more, else
reboots, and the attempts the image counts end such a loop in a normal boot.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn

from khib_tools import bootarea, kexec, system
from khib_tools import format as fmt
from khib_tools.hibernate import RESUMED, wipe
from khib_tools.image import (
    NoImage,
    attempts,
    complete,
    count_attempt,
    mark,
    read_image,
    set_aside,
)
from khib_tools.jumping import HANDOFF, Failure

# The key a resume checks the image with: a file in the resume boot's own initramfs (a
# config puts it there), or the one khib.key= names there; never a file on the image's disk.
KEYS = "/etc/khib/"
RESUME_KEY = KEYS + "hibernate.key"
HANDED_KEY = HANDOFF / "key"  # the key in the restore stage's memory, from the first
HANDED_RAM = HANDOFF / "ranges"  # this machine's RAM, as the first stage checked it
HANDED_META = HANDOFF / "meta.json"  # what the first stage's check found the image records
HANDED_DIGESTS = HANDOFF / "digests"  # each stored block's SHA-256, as that check found it
WAIT = 30  # seconds a resume boot waits for its device (khib.resume_wait= to change)


GO_BACK = 5  # the restore stage's exit status when nothing was written (overlays' /init)
# khib resume --boot's exit status when it refused the image and set it aside (0: there
# was none); any other status leaves the initramfs's script to set it aside itself.
SET_ASIDE = 3
BROKEN = (OSError, ValueError, LookupError, TypeError, AttributeError, MemoryError,
          OverflowError, RecursionError, struct.error)


class Refused(Exception):
    """The image is complete but will not be resumed: it is set aside."""


class GoBack(Failure):
    """The restore stage wrote nothing: back to the first stage, which boots normally."""


def resume(device: str, boot: bool = False) -> int:
    """Either stage, as the command line says. ``boot``: a distribution's initramfs runs
    this at every boot, with the device found: no image is no word (status 0), ``noresume``
    on the command line sets one aside, a refusal returns (status SET_ASIDE) to the
    normal boot."""
    if boot:
        return resume_at_boot(device)
    given = system.cmdline_arg("khib.resume_wait") or ""
    wait = int(given) if given.isdigit() else WAIT
    for _ in range(wait * 10):
        if os.path.exists(device):
            break
        time.sleep(0.1)
    else:  # a hibernated system may be on it: a normal boot could change what it expects
        print(f"khib: not resuming: {device} did not appear in {wait} s: powering off, so "
              "that a normal boot does not change the filesystems a hibernated system on it "
              "expects. Attach it, or boot without khib.resume= to go on.", flush=True)
        stop()
    try:
        complete(device)
    except NoImage as exc:
        raise Failure(f"not resuming: {exc}") from exc
    except BROKEN as exc:
        raise Failure(f"not resuming: {device}: {exc}") from exc
    if system.cmdline_arg("khib.stage") == "restore":
        restore_stage(device)
    resume_or_set_aside(device)


def resume_at_boot(device: str) -> int:
    """The first stage, from a distribution's initramfs (the restore stage is B's own),
    on the device by its kernel name (B's command line names it so)."""
    device = os.path.realpath(device)
    refusal = None
    try:
        complete(device)
    except NoImage:
        return 0
    except BROKEN as exc:  # it may hold an image all the same: never resumable after this
        refusal = f"{device} cannot be read ({exc})"
    if re.search(r"(?:^|\s)noresume(?:\s|$)", system.cmdline()):
        refusal = "noresume is on the command line"
    try:
        resume_or_set_aside(device, refusal)
    except Failure as exc:
        print(f"khib: {exc}", flush=True)
        return SET_ASIDE


def resume_or_set_aside(device: str, refusal: str | None = None) -> NoReturn:
    """The first stage; or the image set aside, and why (Failure), if it refuses (or is
    told to: ``refusal``) or its restore stage comes back: then the CPUs it took offline
    are back and nothing stays loaded."""
    taken: list[Path] = []
    try:
        if refusal:
            raise Refused(refusal)
        first_stage(device, taken)
        raise Refused("the restore stage came back without entering A")
    except (Refused, NoImage, *BROKEN) as exc:
        why = str(exc) if isinstance(exc, Refused) else f"{type(exc).__name__}: {exc}"
        put_aside(device, why)
        with contextlib.suppress(*BROKEN):
            kexec.run("kexec", "-u")
        for cpu in taken:
            with contextlib.suppress(*BROKEN):
                cpu.write_text("1")
        raise Failure(f"not resuming: {why} (the image on {device} is set aside)") from exc


def put_aside(device: str, why: str) -> None:
    """Set the image aside (unless the restore stage did); if even that fails, stop: a
    normal boot must not leave a resumable image behind it."""
    try:
        complete(device)
    except NoImage:
        return
    except BROKEN:
        pass  # unreadable: it may hold an image all the same
    try:
        set_aside(device, why)
    except BROKEN as exc:
        print(f"khib: not resuming: {why}; and the image on {device} cannot be set aside "
              f"({exc}): powering off, so that no normal boot leaves it resumable. Boot "
              "without khib.resume= (with the khib package: with khib=off) to use this "
              "machine.", flush=True)
        stop()


def key_option() -> tuple[list[str], str | None]:
    """khib-restore's --key for the first stage, and the key file."""
    path = system.cmdline_arg("khib.key") or RESUME_KEY
    if not os.path.realpath(path).startswith(KEYS):
        raise Refused(f"khib.key={path}: a resume key lives in the initramfs's {KEYS}")
    if path != RESUME_KEY and not Path(path).is_file():
        raise Refused(f"khib.key={path}: no such file in the initramfs")
    return (["--key", path], path) if Path(path).is_file() else ([], None)


def checked_meta(device: str, key: list[str], out: Path) -> tuple[dict[str, Any], bytes]:
    """The C core checks the whole image; what it records, as checked: parsed, and the
    bytes (which the restore stage must find again). The blocks' digests go to
    ``out``'s folder as ``digests``."""
    checked = subprocess.run(["khib-restore", device, "--check", *key, "--meta-out", str(out),
                              "--digests-out", str(out.with_name("digests"))],
                             capture_output=True, text=True, check=False)
    if checked.returncode:
        problems = checked.stderr.strip().splitlines() or [f"{device} fails its check"]
        first = problems[0].removeprefix("khib: ")
        if "it needs its key" in first:
            first += (f" (this boot has none: put it in the initramfs as {RESUME_KEY} or "
                      "name it with khib.key=)")
        raise Refused(first)
    raw = out.read_bytes()
    try:
        meta = json.loads(raw or b"{}")
    except ValueError as exc:
        raise Refused(f"the image's record is not JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise Refused("the image's record is not a JSON object")
    return meta, raw


def fits_here(meta: dict[str, Any], here: list[tuple[int, int]], area: bootarea.BootArea,
              device: str) -> None:
    """Refuse an image this machine and this boot area cannot resume, by its record."""
    ranges = [tuple(r) for r in meta.get("ranges", [])]
    if ranges != here:
        raise Refused(f"this machine's RAM ({sum(b - a + 1 for a, b in here) >> 20} MiB in "
                      f"{len(here)} ranges) is not the RAM A ran with "
                      f"({sum(b - a + 1 for a, b in ranges) >> 20} MiB in {len(ranges)} ranges)")
    if area.binding() != meta.get("boot_area"):
        raise Refused(f"the boot area on {device} is not the one this image was saved with")


def first_stage(device: str, taken: list[Path]) -> None:
    """Check, then move out of A's way: returns only if the restore stage came back. What
    the image records is compared as the disk has it first (a refusal costs no reading
    of the whole image), then as the C core's check found it, which is what counts."""
    tried = attempts(device)
    if tried >= fmt.ATTEMPTS_MAX:
        raise Refused(f"{tried} resume boots handed it over to a restore and none entered A")
    one_cpu(taken)
    here = system.ram_ranges(Path("/proc/iomem").read_text())
    key, key_path = key_option()
    try:
        area = bootarea.read(device)
    except bootarea.NoBootArea as exc:
        raise Refused(str(exc)) from exc
    fits_here(read_image(device).meta, here, area, device)
    with tempfile.TemporaryDirectory(prefix="khib-") as name:
        meta, checked = checked_meta(device, key, Path(name) / "meta.json")
        digests = (Path(name) / "digests").read_bytes()
    fits_here(meta, here, area, device)
    print(f"khib: the image on {device} is whole; moving into the window to restore it",
          flush=True)
    handed = {"khib/ranges": system.ram_listing(here), "khib/meta.json": checked,
              "khib/digests": digests}
    if key_path:
        handed["khib/key"] = Path(key_path).read_bytes()
    cmdline = [*system.consoles(), area.cmdline, f"khib.resume={device}", "khib.stage=restore"]
    try:  # loaded as B was: a plain load puts i386's setup data below 640 KiB
        kexec.load(area.kernel, kexec.appended(area.initrd, handed), " ".join(cmdline),
                   area.window)
    except kexec.KexecError as exc:
        raise Refused(str(exc)) from exc
    count_attempt(device)  # on the disk before the jump: a loop of failures ends
    complaint = kexec.jump()  # returns only if the restore stage wrote nothing and came back
    if complaint:
        raise Refused(f"kexec -e: {complaint}")


def one_cpu(taken: list[Path]) -> None:
    """Take every other CPU offline where they then halt (HLT, not MWAIT), as the
    kernel's own resume has them do: they wait until A brings them back up (INIT and
    SIPI), whatever the restore writes over them; ``taken`` lists them. Refuse if one
    stays online."""
    if not system.mwait():
        for cpu in sorted(system.CPUS.glob("cpu[0-9]*/online")):
            if cpu.parent.name != "cpu0" and cpu.read_text().strip() == "1":
                try:
                    cpu.write_text("0")
                except OSError:
                    break
                taken.append(cpu)
    cpus = system.online_cpus()
    if cpus > 1:
        raise Refused(f"{cpus} CPUs are online: a resume boot runs on one (boot it with "
                      "maxcpus=1); the others would wait in memory the restore overwrites")


def restore_stage(device: str) -> NoReturn:
    """Confined in the window: write A back, mark the image used, enter A. Returns (as
    GoBack) only while nothing has been written; after that, it enters A or reboots."""
    key = ["--key", str(HANDED_KEY)] if HANDED_KEY.is_file() else []
    with tempfile.TemporaryDirectory(prefix="khib-") as name:
        out = Path(name) / "meta.json"
        write_back(device, key, out)
        try:
            meta = json.loads(out.read_text())
            if HANDED_KEY.is_file():  # no copy of it goes back to A with this memory
                wipe(HANDED_KEY)
            mark(device, fmt.USED_MAGIC)
            subprocess.run(["khib-report", str(meta["status"]), RESUMED], check=False)
            print(f"khib: A is back in memory; entering it (entry {meta['entry']})", flush=True)
            while True:  # back here (0) only if A jumped here again: return to it
                entered = subprocess.run(["khib-jump-back", str(meta["entry"])], check=False)
                if entered.returncode:
                    break
            why = f"khib-jump-back exited {entered.returncode}"
        except BROKEN as exc:
            why = f"{type(exc).__name__}: {exc}"
        # A's memory is written but A was not entered: the next boot may try again.
        mark(device, fmt.ELF_MAGIC)
        reboot(why)


def write_back(device: str, key: list[str], out: Path) -> None:
    """khib-restore, once more from the start if writing began and failed; GoBack if
    nothing was written, a reboot if memory is changed and it failed twice."""
    changed = False
    # The first stage's list of digests: the image is read once more, not twice (a first
    # stage older than this B hands none over: khib-restore then checks it all first).
    digests = ["--digests", str(HANDED_DIGESTS)] if HANDED_DIGESTS.is_file() else []
    for _ in range(2):
        try:
            restored = subprocess.run(
                ["khib-restore", device, "--mem", "/dev/mem", *system.low_option(),
                 "--running", "/proc/iomem",
                 "--within", str(HANDED_RAM), "--meta-is", str(HANDED_META), "--count-write",
                 *digests, *key, "--meta-out", str(out)],
                stderr=subprocess.PIPE, text=True, check=False)
            print(restored.stderr, end="", flush=True)
            code, lines = restored.returncode, restored.stderr.strip().splitlines()
        except BROKEN as exc:
            code, lines = fmt.EXIT_UNTOUCHED, [f"khib-restore: {exc}"]
        if code == fmt.EXIT_WRITTEN:
            return
        changed |= code != fmt.EXIT_UNTOUCHED  # a signal too: memory may have changed
        if not changed:
            first = (lines or ["khib-restore failed"])[0].removeprefix("khib: ")
            set_aside(device, first)
            raise GoBack(f"not resuming: {first} (nothing was written; the image on {device} "
                         "is set aside)")
    reboot("A's memory is partly written and the restore failed twice")


def reboot(why: str) -> NoReturn:
    """Never back to the first stage, whose memory now holds A's: reboot, or stop."""
    print(f"khib: {why}: rebooting (the first stage's memory is A's now; the next resume "
          f"boot tries again, {fmt.ATTEMPTS_MAX} boots at most)", flush=True)
    subprocess.run(["reboot", "-f"], check=False)
    stop()


def stop() -> NoReturn:
    """Power off, and if even that returns, wait forever: never go on."""
    subprocess.run(["poweroff", "-f"], check=False)
    while True:
        time.sleep(3600)
