"""Helpers every test may import: the khib-build command, the repo's configs, recipes
written as data, and where the user's cache is. Fixtures live in conftest.py alone."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import io
import json
import lzma
import os
import random
import re
import shutil
import stat
import struct
import subprocess
import sys
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lz4.block
import yaml
import zstandard

from khib_build.settings.config import load_config
from khib_build.settings.options import OPTIONS, Options, download_dir, resolve
from khib_build.settings.paths import user_cache_root

REPO = Path(__file__).resolve().parent.parent
# The khib tools (the image's Python payload) run on the host too, for the tests.
sys.path.insert(0, str(REPO / "recipes" / "khib-tools" / "src"))
from khib_tools import format as fmt  # noqa: E402 - after the path it is found on

DEFAULT_CONFIG = REPO / "configs" / "khib.yaml"
X86_64_CONFIG = REPO / "configs" / "khib-x86_64.yaml"
USER_CACHE = user_cache_root(os.environ)  # where khib-build keeps its cache, dl/ and so on


def run_options() -> Options:
    """The run options khib-build takes here when no flag is given."""
    return resolve({}, os.environ, OPTIONS)


def user_download_dir() -> Path:
    """The download dir the default image uses when no flag is given."""
    return download_dir(run_options(), load_config(DEFAULT_CONFIG), os.environ)


def khib_argv(*args: object) -> list[str]:
    """The khib-build command line with ``args``, run by this test run's interpreter."""
    return [sys.executable, "-m", "khib_build", *map(str, args)]


def interruptible(argv: list[str]) -> list[str]:
    """``argv`` with SIGINT at its default, as a terminal's Ctrl-C finds it: a test run
    started in the background by a non-interactive shell (a CI job's ``make test &``)
    inherits SIGINT ignored, and a program keeps ignoring it, as it should."""
    return ["env", "--default-signal=INT", *argv]


def khib(*args: object, env: dict[str, str] | None = None, cwd: Path | None = None,
         timeout: float = 1800, umask: int = -1) -> subprocess.CompletedProcess[str]:
    """Run the khib-build command line as a user would; capture its output."""
    return subprocess.run(khib_argv(*args),
                          capture_output=True, text=True, env=env, cwd=cwd or REPO,
                          timeout=timeout, umask=umask, check=False)


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


def write_recipe(root: Path, name: str, **fields: Any) -> Path:
    """``root/recipes/<name>/recipe.yaml`` holding ``fields`` (name first), as YAML."""
    path = root / "recipes" / name / "recipe.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"name": name, **fields}, sort_keys=False))
    return path


def kernel_package() -> str | None:
    """The versioned kernel package linux-image-amd64 depends on, as apt reports it."""
    depends = subprocess.run(["apt-cache", "depends", "linux-image-amd64"],
                             capture_output=True, text=True, check=False).stdout
    return next((line.split(":", 1)[1].strip() for line in depends.splitlines()
                 if line.strip().startswith("Depends:") and "linux-image-" in line), None)


def vmlinux_of(bzimage: bytes) -> bytes:
    """The ELF kernel a bzImage carries, decompressed (xz, zstd or gzip, by its magic)."""
    setup_sectors = bzimage[0x1F1] or 4
    offset, _ = struct.unpack_from("<II", bzimage, 0x248)  # payload_offset, _length
    payload = bzimage[(setup_sectors + 1) * 512 + offset:]
    if payload.startswith(b"\xfd7zXZ\x00"):
        kernel = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
    elif payload.startswith(b"\x28\xb5\x2f\xfd"):
        kernel = zstandard.ZstdDecompressor().decompressobj().decompress(payload)
    elif payload.startswith(b"\x1f\x8b"):
        kernel = zlib.decompressobj(wbits=31).decompress(payload)
    else:
        raise AssertionError(f"a bzImage payload starting {payload[:6]!r}")
    assert kernel.startswith(b"\x7fELF"), kernel[:16]
    return kernel


PAGE = 4096

MiB = 1 << 20


@dataclass(frozen=True)
class Load:
    paddr: int
    memsz: int
    filesz: int
    offset: int

SEGMENTS, META, LAYOUT, SEAL = fmt.NOTE_SEGMENTS, fmt.NOTE_META, fmt.NOTE_LAYOUT, fmt.NOTE_SEAL

DATA, ZERO, FREE = (fmt.KINDS.index(kind) for kind in ("data", "zero", "free"))

PT_MEMORY = fmt.PT_MEMORY  # a khib image's memory segments

BLOCK, RAW = fmt.BLOCK, fmt.BLOCK_RAW  # each block covers BLOCK bytes of memory; RAW: not LZ4


def note_places(data: bytes) -> dict[int | str, tuple[int, int]]:
    """Where the image's notes' descriptors are: (offset, size), KHIB's by type, and
    "VMCOREINFO"."""
    phoff, = struct.unpack_from("<Q", data, 32)
    phnum, = struct.unpack_from("<H", data, 56)
    found: dict[int | str, tuple[int, int]] = {}
    for i in range(phnum):
        kind, _, offset, _, _, filesz, _, _ = struct.unpack_from("<IIQQQQQQ", data,
                                                                  phoff + 56 * i)
        at = offset
        while kind == 4 and at < offset + filesz:
            namesz, descsz, note_type = struct.unpack_from("<III", data, at)
            name = data[at + 12:at + 12 + namesz - 1]
            desc_at = at + 12 + (namesz + 3) // 4 * 4
            assert name in (b"KHIB", b"VMCOREINFO"), name
            found[note_type if name == b"KHIB" else "VMCOREINFO"] = (desc_at, descsz)
            at = desc_at + (descsz + 3) // 4 * 4
    return found


def notes(data: bytes) -> dict[int | str, bytes]:
    """The image's notes: KHIB's by type, and "VMCOREINFO"."""
    return {key: data[at:at + size] for key, (at, size) in note_places(data).items()}


def loads(image: Path | bytes) -> tuple[list[Load], list[tuple[int, int, int, int]]]:
    """The image's memory segments and its records: (paddr, memsz, crc32, kind); from the
    file, or from its bytes already read."""
    data = image if isinstance(image, bytes) else image.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2  # ELF64, complete
    assert struct.unpack_from("<H", data, 16)[0] == 4  # ET_CORE
    desc = notes(data)[SEGMENTS]
    records = [struct.unpack_from("<QQII", desc, 24 * k) for k in range(len(desc) // 24)]
    return loads_of(data), records


def blocks(data: bytes, load: Load) -> list[tuple[int, int, bool]]:
    """A data segment's blocks: (offset of the stored bytes, their length, raw)."""
    found, at, covered = [], load.offset, 0
    while covered < load.memsz:
        word, = struct.unpack_from("<I", data, at)
        found.append((at + 4, word & ~RAW, bool(word & RAW)))
        at += 4 + (word & ~RAW)
        covered += min(BLOCK, load.memsz - covered)
    assert at == load.offset + load.filesz
    return found


def unpacked(data: bytes, load: Load) -> bytes:
    """A data segment's memory, decoded with python-lz4 (not khib's own code)."""
    pieces, left = [], load.memsz
    for at, length, raw in blocks(data, load):
        size = min(BLOCK, left)
        stored = data[at:at + length]
        pieces.append(stored if raw else lz4.block.decompress(stored, uncompressed_size=size))
        left -= size
    return b"".join(pieces)


def memory(path: Path, size: int) -> bytes:
    """A memory file: random pages, runs of zero pages, and a token at a known place."""
    rng = random.Random(7)
    pages = []
    for index in range(size // PAGE):
        zero = (index // 16) % 3 == 1 or index % 7 == 3
        pages.append(bytes(PAGE) if zero else rng.randbytes(PAGE))
    data = bytearray(b"".join(pages))
    data[0x12345:0x12345 + 16] = b"KHIB-TOKEN-12345"
    path.write_bytes(data)
    return bytes(data)


def sealed_message(data: bytes, records: bytes | None = None) -> bytes:
    """What the seal covers: the SHA-256 of the list of each stored block's SHA-256 (its
    header and bytes), the program headers, the notes."""
    phoff, = struct.unpack_from("<Q", data, 32)
    phnum, = struct.unpack_from("<H", data, 56)
    found = notes(data)
    digests = b"".join(hashlib.sha256(data[at - 4:at + length]).digest()
                       for load in loads_of(data) if load.filesz
                       for at, length, _ in blocks(data, load))
    return (hashlib.sha256(digests).digest() + data[phoff:phoff + 56 * phnum]
            + (records or found[SEGMENTS]) + found[META] + found[LAYOUT]
            + found.get("VMCOREINFO", b""))


def loads_of(data: bytes) -> list[Load]:
    """An image's memory segments, from its bytes."""
    phoff, = struct.unpack_from("<Q", data, 32)
    phnum, = struct.unpack_from("<H", data, 56)
    return [Load(paddr, memsz, filesz, offset) for kind, _, offset, _, paddr, filesz, memsz, _
            in (struct.unpack_from("<IIQQQQQQ", data, phoff + 56 * i) for i in range(phnum))
            if kind == PT_MEMORY]


def image_of(disk: Path, at: int = 0) -> bytes:
    """The khib image at the start of a disk (or file), or ``at`` bytes into it (a
    partition), without reading the rest: up to the end of the last part its program
    headers name."""
    with disk.open("rb") as handle:
        handle.seek(at)
        header = handle.read(64)
        phoff, = struct.unpack_from("<Q", header, 32)
        phnum, = struct.unpack_from("<H", header, 56)
        handle.seek(at + phoff)
        phdrs = [struct.unpack_from("<IIQQQQQQ", handle.read(56)) for _ in range(phnum)]
        handle.seek(at)
        return handle.read(max(phoff + 56 * phnum, *(p[2] + p[5] for p in phdrs)))


def reseal(image: Path, key: bytes | None = None) -> None:
    """Recompute every CRC-32 and the SHA-256 seal after a change (and the HMAC with
    ``key``): without it, what someone who can write the disk but has no key can do."""
    original = image_of(image)
    segments, records = loads(original)
    places = note_places(original)
    found = notes(original)
    desc = bytearray(found[SEGMENTS])
    for index, (load, record) in enumerate(zip(segments, records, strict=True)):
        if load.filesz:
            crc = zlib.crc32(unpacked(original, load))
            struct.pack_into("<QQII", desc, 24 * index, *record[:2], crc, record[3])
    message = sealed_message(original, bytes(desc))
    size, keyed, _, mac = struct.unpack_from("<QQ32s32s", found[SEAL])
    if key:  # without the key, the HMAC (and the flag) stay as they were
        keyed, mac = 1, hmac.new(key, message, "sha256").digest()
    seal = struct.pack("<QQ32s32s", size, keyed, hashlib.sha256(message).digest(), mac)
    with image.open("r+b") as handle:  # the two notes rewritten where they are
        for name, new in ((SEGMENTS, desc), (SEAL, seal)):
            handle.seek(places[name][0])
            handle.write(new)

HEADER = re.compile(rb"070701([0-9A-F]{8}){13}")


def fields(raw: bytes) -> list[int]:
    return [int(raw[6 + 8 * i: 14 + 8 * i], 16) for i in range(13)]


def members(archive: bytes) -> list[tuple[str, list[int]]]:
    """(name, header fields) of each member, read independently of the writer."""
    found, offset = [], 0
    while True:
        assert HEADER.match(archive, offset), offset
        values = fields(archive[offset:offset + 110])
        namesize, size = values[11], values[6]
        name = archive[offset + 110: offset + 110 + namesize - 1].decode()
        found.append((name, values))
        offset += 110 + namesize
        offset += -offset % 4
        offset += size + (-size % 4)
        if name == "TRAILER!!!":
            return found


def describe(root: Path) -> dict[str, tuple]:
    """Everything the comparison cares about, per path."""
    found = {}
    inodes: dict[int, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        st = path.lstat()
        kind = stat.S_IFMT(st.st_mode)
        if stat.S_ISREG(kind):
            first = inodes.setdefault(st.st_ino, rel)
            found[rel] = ("file", stat.S_IMODE(st.st_mode), path.read_bytes(), first)
        elif stat.S_ISLNK(kind):
            found[rel] = ("link", os.readlink(path))
        elif stat.S_ISDIR(kind):
            found[rel] = ("dir", stat.S_IMODE(st.st_mode))
        else:
            found[rel] = ("dev", kind, stat.S_IMODE(st.st_mode), os.major(st.st_rdev),
                          os.minor(st.st_rdev))
    return found


def member(name: str, data: bytes | None = b"x", kind: bytes = tarfile.REGTYPE,
           link: str = "", size: int | None = None) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = (len(data) if data is not None else 0) if size is None else size
    if kind == tarfile.BLKTYPE:
        info.devmajor, info.devminor = 8, 0
    return info, data


def tarball(members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def cases(outside: Path) -> dict[str, tuple[bytes, str]]:
    """Archive bytes and the text the refusal must contain, per attack."""
    ok = member("pkg-1/ok")
    return {
        "dotdot": (tarball([ok, member("pkg-1/../../escape")]),
                   "entry 'pkg-1/../../escape': Path contains '..'"),
        "absolute": (tarball([ok, member(f"{outside}/absolute")]),
                     f"entry '{outside}/absolute': Path is absolute"),
        "symlink-then-file": (tarball([member("pkg-1/link", None, tarfile.SYMTYPE,
                                              str(outside)), member("pkg-1/link/pwned")]),
                              "entry 'pkg-1/link/pwned': Cannot extract through symlink"),
        "hardlink-outside": (tarball([ok, member("pkg-1/hl", None, tarfile.LNKTYPE,
                                                 "../../../etc/passwd")]),
                             "entry 'pkg-1/hl -> ../../../etc/passwd'"),
        "device-node": (tarball([ok, member("pkg-1/sda", None, tarfile.BLKTYPE)]),
                        "refusing device node entry 'pkg-1/sda'"),
        "bomb": (tarball([member("pkg-1/zeros", b"\0" * (40 << 20))], "w:xz"),
                 "entry 'pkg-1/zeros' takes the unpacked size past"),
    }


def recipe_for(root: Path, data: bytes, **extra: Any) -> Path:
    """An image of one package whose source is the archive ``data`` (on a file:// mirror);
    its config."""
    mirror = root / "mirror"
    mirror.mkdir(parents=True, exist_ok=True)
    (mirror / "pkg-1.tar").write_bytes(data)
    write_recipe(root, "pkg", version="1", license="MIT", **extra,
                 source={"urls": ["http://127.0.0.1:9/pkg-1.tar"],
                         "sha256": hashlib.sha256(data).hexdigest()},
                 install=["cp -r . {{ destdir }}/"])
    config = root / "image.yaml"
    config.write_text(f"recipe_dirs: [recipes]\npackages: [pkg]\nmirrors: [{mirror.as_uri()}]\n")
    return config

BIG = 48 << 20  # a file large enough that storing and packing take a moment


def slow_sample(root: Path, urls: list[str], mirrors: list[str]) -> Path:
    sample = write_sample(root, urls, mirrors)
    recipe = root / "recipes" / "hello" / "recipe.yaml"
    recipe.write_text(recipe.read_text().replace(
        "build:\n", "build:\n  - sleep 3 # khib-interrupt-test\n").replace(
        "install:\n", f"install:\n  - head -c {BIG} /dev/urandom > {{{{ destdir }}}}/big.bin\n"))
    return sample.config


def mirrored_slow_sample(root: Path) -> Path:
    """slow_sample with its tarball on a file:// mirror; its image config."""
    mirror = root / "mirror"
    mirror.mkdir()
    (mirror / "hello-1.0.tar.gz").write_bytes(make_tarball())
    return slow_sample(root, ["http://127.0.0.1:9/hello-1.0.tar.gz"], [mirror.as_uri()])


def run_until(config: Path, root: Path, marker: str, sig: int, dl: Path | None = None,
              cache: Path | None = None) -> tuple[int, str]:
    """Start a build, send ``sig`` once ``marker`` shows on its progress output (``-v``:
    every step's line)."""
    process = subprocess.Popen(
        interruptible(khib_argv("-v", "rootfs", "-c", config, "-o", root / "out", "--dl-dir",
                                dl or root / "dl", "--cache-dir", cache or root / "cache",
                                "--fetch-deadline", 60)),
        stderr=subprocess.PIPE, text=True)
    seen = []
    assert process.stderr is not None
    for line in process.stderr:
        seen.append(line)
        if marker in line:
            process.send_signal(sig)
            break
    seen += process.stderr.readlines()
    return process.wait(timeout=60), "".join(seen)


HELLO_C = b"""#include <stdio.h>
int main(void) { printf("hello from khib sample, %d-bit\\n", (int)(8 * sizeof(void *))); return 0; }
"""
MAKEFILE = b"""hello: hello.c
\t$(CC) $(CFLAGS) -static -o $@ hello.c $(LDFLAGS)
"""


@dataclass(frozen=True)
class Sample:
    tarball: bytes
    filename: str
    sha256: str
    config: Path


def make_tarball(version: str = "1.0") -> bytes:
    """The sample's source tarball, the same bytes on every call (gzip's header has no
    time in it: two calls a second apart once gave two sha256s)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in (("hello.c", HELLO_C), ("Makefile", MAKEFILE)):
            info = tarfile.TarInfo(f"hello-{version}/{name}")
            info.size, info.mtime, info.mode = len(data), 1_000_000_000, 0o644
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue(), mtime=0)


def write_sample(root: Path, urls: list[str], mirrors: list[str], arch: str = "i386") -> Sample:
    """A recipe dir and an image config that builds the sample for ``arch``."""
    tarball = make_tarball()
    sha = hashlib.sha256(tarball).hexdigest()
    recipe = root / "recipes" / "hello" / "recipe.yaml"
    recipe.parent.mkdir(parents=True)
    recipe.write_text(
        "name: hello\nversion: '1.0'\nlicense: MIT\nsource:\n"
        f"  urls: [{', '.join(urls)}]\n  sha256: {sha}\n  file: hello-1.0.tar.gz\n"
        "build:\n  - make CC=\"{{ cc }}\" CFLAGS=\"{{ cflags }}\" LDFLAGS=\"{{ ldflags }}\"\n"
        "install:\n  - install -D -m 755 hello {{ destdir }}/usr/bin/hello\n"
    )
    cc = "[gcc, -m32]" if arch == "i386" else "[gcc]"
    config = root / "sample.yaml"
    config.write_text(
        f"name: sample\narch: {arch}\ntoolchain: {{cc: {cc}}}\nrecipe_dirs: [recipes]\n"
        f"packages: [hello]\nmirrors: [{', '.join(mirrors)}]\n"
    )
    return Sample(tarball, "hello-1.0.tar.gz", sha, config)


def build_greet(root: Path, **recipe_extra: Any) -> str:
    """Build an image of one package made from its own src/ folder; its inspect listing."""
    recipe = root / "recipes" / "greet"
    (recipe / "src").mkdir(parents=True, exist_ok=True)
    (recipe / "src" / "greet.sh").write_text("#!/bin/sh\necho greetings\n")
    write_recipe(root, "greet", version="2", license="MIT", **recipe_extra,
                 install=["install -D -m 755 greet.sh {{ destdir }}/bin/greet"])
    config = root / "img.yaml"
    config.write_text("recipe_dirs: [recipes]\npackages: [greet]\ncompression: none\n"
                      "output: rootfs.cpio\n")
    assert_ok(khib("rootfs", "-c", config, "-o", root / "out", "--cache-dir", root / "cache"))
    return khib("inspect", root / "out" / "rootfs.cpio").stdout


GREET_H = "const char *greeting(void);\n"
GREET_C = '#include "greet.h"\nconst char *greeting(void) { return "hello from libgreet"; }\n'
APP_C = ('#include <stdio.h>\n#include <greet.h>\n'
         'int main(void) { puts(greeting()); return 0; }\n')
TOOL_C = '#include <stdio.h>\nint main(void) { puts("tool"); return 0; }\n'
LIBGREET_BUILD = """#!/bin/sh
# Builds the static library.
set -e
$CC $CFLAGS -c greet.c -o greet.o
ar rcs libgreet.a greet.o
"""


def write_graph_sample(root: Path, extra_steps: str = "") -> Path:
    """Three src/ packages for i386: libgreet (a static library), app (links it) and tool
    (independent); ``extra_steps`` are build commands every package runs first.  The
    image config's path."""
    packages = {
        "libgreet": ({"greet.h": GREET_H, "greet.c": GREET_C}, [],
                     ["CC=\"{{ cc }}\" CFLAGS=\"{{ cflags }}\" sh {{ files }}/build.sh"],
                     ["install -D -m 644 greet.h {{ destdir }}/usr/include/greet.h",
                      "install -D -m 644 libgreet.a {{ destdir }}/usr/lib/libgreet.a"]),
        "app": ({"app.c": APP_C}, ["libgreet"],
                ["{{ cc }} {{ cflags }} -static -o app app.c -L{{ sysroot }}/usr/lib -lgreet"
                 " {{ ldflags }}"],
                ["install -D -m 755 app {{ destdir }}/usr/bin/app"]),
        "tool": ({"tool.c": TOOL_C}, [],
                 ["{{ cc }} {{ cflags }} -static -o tool tool.c {{ ldflags }}"],
                 ["install -D -m 755 tool {{ destdir }}/usr/bin/tool"]),
    }
    for name, (sources, depends, build, install) in packages.items():
        folder = root / "recipes" / name
        (folder / "src").mkdir(parents=True)
        for file, text in sources.items():
            (folder / "src" / file).write_text(text)
        steps = [line for line in extra_steps.splitlines() if line] + build
        (folder / "recipe.yaml").write_text(
            f"name: {name}\nversion: '1'\nlicense: MIT\ndepends: {depends}\n"
            f"build:\n{yaml_list(steps)}install:\n{yaml_list(install)}")
    (root / "recipes" / "libgreet" / "files").mkdir()
    (root / "recipes" / "libgreet" / "files" / "build.sh").write_text(LIBGREET_BUILD)
    config = root / "graph.yaml"
    config.write_text("name: graph\narch: i386\ntoolchain: {cc: [gcc, -m32], ldflags: [-m32]}\n"
                      "recipe_dirs: [recipes]\npackages: [app, tool]\n")
    return config


# The C library's development packages of both target arches.
LIBC_DEV = ("libc6-dev", "libc6-dev-i386", "linux-libc-dev")


def point_release(root: Path, packages: tuple[str, ...] = LIBC_DEV) -> dict[str, str]:
    """An environment in which dpkg reports a new Debian revision of ``packages`` (a copy
    of dpkg's status with their versions bumped, through DPKG_ADMINDIR): what a point
    release of the C library looks like to khib-build."""
    admin = root / "dpkg"
    admin.mkdir()
    for item in ("info", "arch"):
        (admin / item).symlink_to(Path("/var/lib/dpkg") / item)
    stanzas = Path("/var/lib/dpkg/status").read_text().split("\n\n")
    for index, stanza in enumerate(stanzas):
        name = re.search(r"^Package: (\S+)$", stanza, re.MULTILINE)
        if name and name[1] in packages:
            stanzas[index] = re.sub(r"^(Version: .*)$", r"\1+point1", stanza,
                                    flags=re.MULTILINE)
    (admin / "status").write_text("\n\n".join(stanzas))
    return {**os.environ, "DPKG_ADMINDIR": str(admin)}


def yaml_list(items: list[str]) -> str:
    return "".join(f"  - {json.dumps(item)}\n" for item in items)


KERNEL_TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
MEMBERS = ("usr/gen_init_cpio.c", "usr/gen_initramfs.sh")


def kernel_usr_tools() -> Path:
    """A folder with ``usr/gen_init_cpio`` (compiled) and ``usr/gen_initramfs.sh``."""
    home = USER_CACHE / "kernel-tools" / "linux-source-6.1"
    if (home / "usr" / "gen_init_cpio").is_file():
        return home
    work = Path(tempfile.mkdtemp(prefix="kernel-tools-"))
    try:
        subprocess.run(["tar", "-xJf", str(KERNEL_TARBALL), "-C", str(work),
                        "--strip-components=1", *(f"linux-source-6.1/{m}" for m in MEMBERS)],
                       check=True)
        subprocess.run(["gcc", "-O2", "-o", str(work / "usr" / "gen_init_cpio"),
                        str(work / "usr" / "gen_init_cpio.c")], check=True)
        home.parent.mkdir(parents=True, exist_ok=True)
        os.replace(work, home)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return home


def fresh_copy(dest: Path) -> Path:
    """The files a clone would have (tracked, plus new files not ignored), nothing else."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, names):
        source = REPO / os.fsdecode(name)
        if source.exists() or source.is_symlink():
            (dest / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / os.fsdecode(name), follow_symlinks=False)
    return dest
