"""Users' kernels: a distribution-like A of each release (configs/kernels/, no khib patch,
KASLR, VMEMMAP, PAE on i386) hibernates across a power-off with khib's own B, QEMU TCG.
A holds a tmpfs file, a process and a token, refreshes its counters and hibernates; in
`make matrix`, a copy of the image with a changed byte is refused and set aside (in `make
test`, test_hibernate's refusals stand for it); the resume brings A back
with every CPU online, its clock going on. The free-page walk must agree with A's own
count within 2 %. The rows are configs/kernels/matrix.yaml's: `make test` runs those
marked ci, `make matrix` (KHIB_MATRIX=all) every row, each result kept as JSON in
$KHIB_MATRIX_RESULTS for tests/kernels_doc.py, which writes docs/kernels.md."""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import time
from pathlib import Path

import pytest
import yaml

from tests import dumptool
from tests.conftest import built_once
from tests.guest import (
    FIXTURES,
    Target,
    a_initrd,
    a_script,
    appended,
    assert_a_intact,
    copy,
    disk,
    refused,
    resume_boot,
)
from tests.helpers import REPO, USER_CACHE, blocks, image_of, khib, loads, reseal

pytestmark = pytest.mark.slow

MATRIX = REPO / "configs" / "kernels"
ROWS = yaml.safe_load((MATRIX / "matrix.yaml").read_text())["rows"]
KERNEL_WORDS = re.compile(r"BUG:|Oops|Kernel panic|not syncing|general protection")
FEATURES = ("RANDOMIZE_BASE", "RANDOMIZE_MEMORY", "SPARSEMEM_VMEMMAP", "X86_PAE", "HIGHMEM64G",
            "PAGE_POISONING")
HIBERNATE = "khib hibernate --kernel /boot/bzImage --device /dev/vda --key /dev/vdb"
# A page above 4 GiB (PAE rows), of a tmpfs file a process maps: found through
# /proc/self/pagemap, a token written there; on SIGUSR1 the process says whether the
# page and token are still where they were.
HIGH_PY = """import mmap, os, signal, struct
token = os.urandom(16).hex().encode()
SIZE = 64 << 20

def start_of(path):
    for line in open("/proc/self/maps"):
        if line.rstrip().endswith(path):
            return int(line.split("-")[0], 16)

def pfn_of(address):
    pagemap.seek(address // 4096 * 8)
    entry, = struct.unpack("<Q", pagemap.read(8))
    return entry & ((1 << 55) - 1) if entry >> 63 else 0

# tmpfs files mapped one by one (each its own mapping, found by its name in
# /proc/self/maps) until a page of one lies above 4 GiB.
pagemap = open("/proc/self/pagemap", "rb")
chunks, found = [], None
while found is None and len(chunks) < 32:
    path = f"/tmp/high-{len(chunks)}"
    try:
        with open(path, "w+b") as file:
            file.truncate(SIZE)
            chunk = mmap.mmap(file.fileno(), SIZE)
        for page in range(0, SIZE, 4096):
            chunk[page] = 1
    except (OSError, MemoryError) as error:
        print(f"A-HIGH none: {error}", flush=True)
        break
    chunks.append(chunk)
    start = start_of(path)
    for page in range(0, SIZE, 4096):
        if pfn_of(start + page) >= 0x100000:
            found = (chunk, start + page, page, pfn_of(start + page))
            chunk[page:page + len(token)] = token
            break
print(f"A-HIGH pfn={found[3]:#x} token={token.decode()}" if found else "A-HIGH none",
      flush=True)

def again(*_):
    chunk, address, page, pfn = found
    print(f"A-HIGH-AFTER pfn={pfn_of(address):#x} token={chunk[page:page + 32].decode()}",
          flush=True)

signal.signal(signal.SIGUSR1, again)
while True:
    signal.pause()
"""
BODY = f"""
[ -w /proc/sys/vm/stat_refresh ] && echo 1 > /proc/sys/vm/stat_refresh
@HIGH@
{HIBERNATE} --initrd /boot/initrd
echo "A-JUMP hibernate result=$?"; check hibernate
@HIGH_AFTER@
echo "A-UPTIME after $(cut -d ' ' -f 1 /proc/uptime) $(cat /proc/sys/kernel/random/boot_id)"
"""
HIGH = ("python3 /boot/high.py > /tmp/high.out 2>&1 & high=$!\n"
        "for _ in $(seq 120); do grep -q A-HIGH /tmp/high.out && break; sleep 1; done\n"
        "cat /tmp/high.out")
HIGH_AFTER = "kill -USR1 $high; sleep 2; grep A-HIGH-AFTER /tmp/high.out"


def selected() -> list[dict[str, object]]:
    """Every row for `make matrix`; the rows marked ci otherwise."""
    every = os.environ.get("KHIB_MATRIX") == "all"
    return [row for row in ROWS if every or row.get("ci")]


def row_id(row: dict[str, object]) -> str:
    return f"{row['release']}-{row['arch']}-{row['cpus']}cpu-{row['memory']}M"


def matrix_kernel(factory: pytest.TempPathFactory, name: str) -> tuple[Path, str]:
    """The folder of the kernel configs/kernels/NAME.yaml builds (through the user's build
    cache, built once per run), and how long building it took (this run or the one that
    built what the cache holds)."""
    config = MATRIX / f"{name}.yaml"

    def build(folder: Path) -> None:
        result = khib("kernel", "-c", config, "-o", folder, timeout=3600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        (folder / "said").write_text(result.stdout)
    folder = built_once(factory, f"kernel-{name}", build)
    said = re.search(r"^kernel: \S+ \((\w+), ([\d.]+) s\)", (folder / "said").read_text(),
                     re.M)
    # The build's time, kept beside the build cache for the runs that find it cached.
    times = USER_CACHE / "test-kernels" / "build-seconds.json"
    times.parent.mkdir(parents=True, exist_ok=True)
    with (times.parent / ".build-seconds.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        known = json.loads(times.read_text()) if times.is_file() else {}
        if said and said[1] == "built":
            known[name] = float(said[2])
            times.write_text(json.dumps(known, indent=1, sort_keys=True) + "\n")
    seconds = known.get(name)
    return folder, f"{seconds:.0f} s" if seconds is not None else "?"


def kernel_facts(folder: Path, arch: str) -> dict[str, object]:
    """What the built A is: its distribution features (from its full config) and the
    patches it carries for its arch (a patch only to the other arch's files is left out)."""
    config = folder / "kernel.full.config"
    values = dict(re.findall(r"^CONFIG_(\w+)=(.*)$", config.read_text(), re.M))
    features = [name for name in FEATURES if values.get(name, "n") not in ("n", "")]
    features.append(f"NR_CPUS={values.get('NR_CPUS', '?')}")
    other = "_64." if arch == "i386" else "_32."
    patches = []
    for name in json.loads((folder / "kernel.json").read_text())["inputs"]:
        if name.startswith("patch "):
            patch = next((REPO / "recipes" / "linux" / "patches").rglob(name.split(" ", 2)[2]))
            touched = re.findall(r"^\+\+\+ b/(\S+)", patch.read_text(), re.M)
            if any(other not in path for path in touched):
                patches.append(patch.name)
    return {"features": features, "patches": patches}


def seconds(pattern: str, text: str) -> float | None:
    found = re.search(pattern, text)
    return float(found[1]) if found else None


@pytest.mark.parametrize("row", selected(), ids=row_id)
def test_a_users_kernel_hibernates_and_resumes(row: dict[str, object],
                                               request: pytest.FixtureRequest,
                                               tmp_path_factory: pytest.TempPathFactory,
                                               tmp_path: Path) -> None:
    try:
        record(row, passed=True, **hibernate_row(row, request, tmp_path_factory, tmp_path))
    except AssertionError as failed:  # the matrix lists a row that fails, and why
        lines = str(failed).strip().splitlines() or ["?"]
        kernel = [line.strip() for line in lines if KERNEL_WORDS.search(line)]
        record(row, passed=False, why=kernel[:2] or lines[:1], console=lines[-12:])
        raise


def hibernate_row(row: dict[str, object], request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
                  ) -> dict[str, object]:
    """One row's hibernation and resume, checked; its figures."""
    release, arch = str(row["release"]), str(row["arch"])
    cpus, memory, high = int(row["cpus"]), int(row["memory"]), bool(row.get("high"))
    config, image, b_kernel = FIXTURES[arch]
    b = matrix_kernel(tmp_path_factory, str(row["b"]))[0] / "bzImage" if row.get("b") else \
        request.getfixturevalue(b_kernel)
    target = Target(arch, config, request.getfixturevalue(image), b)
    folder, built = matrix_kernel(tmp_path_factory, f"a-{release}-{arch}")
    kernel = folder / "bzImage"
    token, key = f"tok-{secrets.token_hex(12)}", secrets.token_bytes(512)
    vda = disk(tmp_path / "vda.img", memory + 128)
    (tmp_path / "vdb.img").write_bytes(key)
    body = BODY.replace("@HIGH@", HIGH if high else "").replace(
        "@HIGH_AFTER@", HIGH_AFTER if high else "")
    initrd = a_initrd(target, tmp_path, a_script(token, body), {})
    if high:
        initrd.write_bytes(appended(initrd.read_bytes(), {"boot/high.py": HIGH_PY.encode()},
                                    tmp_path))
    started = time.monotonic()
    first = khib("boot", "-c", target.config, "--kernel", kernel, "--image", initrd,
                 "--memory", memory, "--cpus", cpus, "--disk", vda, "--disk",
                 tmp_path / "vdb.img", "--run", "/boot/a.sh",
                 "--expect", "reboot: Power down", "--timeout", 2400)
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr
    first_boot = time.monotonic() - started
    tail = first.stdout[-6000:]
    assert "A-JUMP hibernate" not in first.stdout, tail
    walk = re.search(r"khib-save: free pages: the walk found (\d+), A counted (\d+)",
                     first.stdout)
    assert walk, f"A's free pages were not walked\n{tail}"
    found, counted = int(walk[1]), int(walk[2])
    assert abs(found - counted) <= counted * 0.02, (found, counted)

    # makedumpfile (sid's) reads the exported core and counts A's free pages itself.
    core = tmp_path / "a.core"
    exported = khib("khib", "-o", target.image.parent, "export", vda, core, "--key",
                    tmp_path / "vdb.img")
    assert exported.returncode == 0, exported.stdout[-3000:] + exported.stderr
    dump_free, dump_said = dumptool.free_pages(core, arch)
    core.unlink()
    if dump_free is not None:
        assert abs(dump_free - found) <= found * 0.01, (dump_free, found)

    keyed = tmp_path / "keyed-rootfs"
    keyed.write_bytes(appended(target.image.read_bytes(), {"etc/khib/hibernate.key": key},
                               tmp_path))
    if os.environ.get("KHIB_MATRIX") == "all":  # `make test`'s hibernation tests refuse too
        saved = image_of(vda)
        changed = copy(vda, "changed.img")
        with changed.open("r+b") as handle:
            at = next(b[0] for s in loads(saved)[0] if s.filesz for b in blocks(saved, s)
                      if b[2])
            handle.seek(at + 1000)
            byte = handle.read(1)[0]
            handle.seek(at + 1000)
            handle.write(bytes([byte ^ 0x01]))
        reseal(changed)
        refused(target, keyed, changed, "/dev/vda: the image fails its HMAC", memory=memory,
                cpus=cpus)

    started = time.monotonic()
    second = resume_boot(target, keyed, vda, memory=memory, cpus=cpus)
    resume = time.monotonic() - started
    console = first.stdout + second
    assert "khib: resumed from hibernation (/dev/vda)" in second, second[-6000:]
    assert_a_intact(console, ["hibernate"], cpus)
    assert f"token={token}" in second
    before = re.search(r"A-UPTIME before ([\d.]+) (\S+)", console)
    after = re.search(r"A-UPTIME after ([\d.]+) (\S+)", console)
    assert before and after and after[2] == before[2] and float(after[1]) > float(before[1])
    if high:
        put = re.search(r"A-HIGH pfn=(0x[0-9a-f]+) token=(\w+)", console)
        back = re.search(r"A-HIGH-AFTER pfn=(0x[0-9a-f]+) token=(\w+)", console)
        assert put and back and back[1] == put[1] and back[2] == put[2], console[-4000:]
    stored = re.search(r"khib-save: /dev/vda: (.*) in [\d.]+ s", first.stdout)
    return {"kernel": built, **kernel_facts(folder, arch), "walk": [found, counted],
            "makedumpfile": dump_free,
            "makedumpfile_said": dump_said or None,
            "makedumpfile_version": dumptool.makedumpfile_version(dumptool.sid_root(arch)),
            "save": seconds(r"khib-save: /dev/vda: .* in ([\d.]+) s", first.stdout),
            "write": seconds(r"khib-restore: \d+ segments written and verified in ([\d.]+) s",
                             second),
            "first_boot": round(first_boot, 1), "resume_boot": round(resume, 1),
            "stored": stored[1] if stored else None}


def record(row: dict[str, object], **result: object) -> None:
    """This row's figures, for docs/kernels.md (make matrix)."""
    folder = os.environ.get("KHIB_MATRIX_RESULTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{row_id(row)}.json").write_text(
            json.dumps({**row, **result}, indent=1, sort_keys=True) + "\n")
