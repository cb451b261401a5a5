"""The image config: what to build, for which architecture, and how to pack it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from khib_build.settings.compression import FORMATS
from khib_build.settings.kinds import NAME, URL, Choice, FilePath, Int, ListOf, Optional, Str
from khib_build.settings.paths import data_dir
from khib_build.settings.pins import KernelPin, PathOrPin
from khib_build.settings.schema import Origin, Record, load, origin_field, setting

BUILTIN_CONFIGS = data_dir("configs")
KERNEL_ROLES = ("b", "a")  # the kernel khib images boot; a user's kernel that hibernates
KERNEL_OPTION = Str(r"(?!CONFIG_)[A-Z0-9_]+=(y|m|n|-?[0-9]+|0x[0-9a-fA-F]+|\"[^\"]*\")",
                    "SYMBOL=value without the CONFIG_ prefix, e.g. KEXEC=y")


@dataclass(frozen=True)
class Arch:
    """What khib-build knows of a target architecture."""

    name: str
    triplet: str
    qemu: str
    kernel_arch: str
    elf_class: int
    elf_machine: str  # e_machine as pyelftools names it
    multiarch: str  # Debian's multiarch folder name (lib/<multiarch>)
    libc_packages: tuple[str, ...]  # Debian's C library development files for the target
    lib_dirs: tuple[str, ...]  # where those packages keep the target's libraries


ARCHES = {
    "i386": Arch("i386", "i686-linux-gnu", "qemu-system-x86_64", "i386", 32, "EM_386",
                 "i386-linux-gnu",
                 ("libc6-dev-i386", "libc6-dev", "linux-libc-dev", "gcc-multilib"),
                 ("usr/lib32",)),
    "x86_64": Arch("x86_64", "x86_64-linux-gnu", "qemu-system-x86_64", "x86_64", 64,
                   "EM_X86_64", "x86_64-linux-gnu",
                   ("libc6-dev", "linux-libc-dev"), ("usr/lib/x86_64-linux-gnu",)),
}


@dataclass(frozen=True, kw_only=True)
class Toolchain:
    """The target compiler: a command line and the flags every package gets."""

    cc: tuple[str, ...] = setting(
        ListOf(Str(), min_items=1), ("gcc",), "compiler command and its fixed arguments"
    )
    cflags: tuple[str, ...] = setting(ListOf(Str()), ("-Os",), "C compiler flags")
    ldflags: tuple[str, ...] = setting(ListOf(Str()), (), "linker flags")
    strip: tuple[str, ...] = setting(
        ListOf(Str(), min_items=1), ("strip",),
        "the strip command for the target's ELF files (the host's binutils strip reads both "
        "i386 and x86_64)",
    )
    libc_packages: tuple[str, ...] | None = setting(
        Optional(ListOf(NAME, min_items=1)), None,
        "installed Debian packages whose headers and static libraries form the target's C "
        "library in every package's sysroot (default, by arch: i386 libc6-dev-i386 libc6-dev "
        "linux-libc-dev gcc-multilib; x86_64 libc6-dev linux-libc-dev)",
    )


@dataclass(frozen=True, kw_only=True)
class Allowance:
    """An image file whose check failures are warnings, and why."""

    path: str = setting(Str(r"/\S+", "an absolute path in the image"), help="the file")
    reason: str = setting(Str(r".*\S.*", "a reason"), help="why it may fail the checks")


@dataclass(frozen=True, kw_only=True)
class ImageConfig:
    """One image: its packages, overlays and output, as ``configs/*.yaml`` declares it
    (``include: other.yaml`` reads another config first; see docs/formats.md)."""

    name: str = setting(NAME, "khib", "image name, shown in the banner")
    version: str = setting(Str(verbatim=True), "0", "image version, shown in the banner")
    arch: str = setting(Choice(tuple(ARCHES)), "i386", "target architecture")
    toolchain: Toolchain = setting(Record(Toolchain), Toolchain(), "target compiler settings")
    packages: tuple[str, ...] = setting(
        ListOf(NAME, unique=True, min_items=1), help="packages installed into the image"
    )
    recipe_dirs: tuple[Path, ...] = setting(
        ListOf(FilePath(must_exist=True, is_dir=True)), (),
        "recipe directories searched before the built-in recipes/",
    )
    overlays: tuple[Path, ...] = setting(
        ListOf(FilePath(must_exist=True, is_dir=True)), (),
        "directories copied over the image; *.j2 files are rendered with jinja2",
    )
    device_tables: tuple[Path, ...] = setting(
        ListOf(FilePath(must_exist=True)), (),
        "device/permission tables (name type mode uid gid major minor start inc count)",
    )
    file_lists: tuple[Path, ...] = setting(
        ListOf(FilePath(must_exist=True)), (),
        "gen_init_cpio file lists (file, dir, nod, slink, pipe, sock lines)",
    )
    early_segment: Path | None = setting(
        Optional(FilePath(must_exist=True, is_dir=True)), None,
        "folder packed as an uncompressed segment before the image (early microcode)",
    )
    compression: str = setting(Choice(tuple(FORMATS)), "gzip", "compression of the image")
    compression_level: int | None = setting(
        Optional(Int(0, 22)), None,
        "compression level (default: gzip 9, xz 6, zstd 19, lz4 9, bzip2 9, lzma 6)",
    )
    output: str = setting(
        Str(r"[A-Za-z0-9][A-Za-z0-9._-]*", "a file name"), "rootfs.gz", "image file name"
    )
    mirrors: tuple[str, ...] = setting(
        ListOf(URL), (),
        "source mirrors tried after the download dir, before upstream",
    )
    download_dir: Path | None = setting(
        Optional(FilePath(is_dir=True)), None,
        "download dir (default: KHIB_DL_DIR, else the user's cache dir)",
    )
    kernel_options: tuple[str, ...] = setting(
        ListOf(KERNEL_OPTION, unique=True),
        (), "kernel config symbols the image itself needs (beyond its recipes')",
    )
    kernel_source: Path | KernelPin | None = setting(
        Optional(PathOrPin()), None,
        "kernel source: a tarball (e.g. /usr/src/linux-source-6.1.tar.xz), an unpacked tree, "
        "or a pinned tarball to fetch (a Debian package of a suite, or a URL; see below); "
        "--kernel-src overrides",
    )
    kernel_role: str = setting(
        Choice(KERNEL_ROLES), "b",
        "the kernel's role: b, the kernel khib images boot (the linux recipe's backports "
        "for its release, then its patches); a, a user's kernel that hibernates (the "
        "backports only)",
    )
    kernel_base: str = setting(
        Str(r"\S+", "tinyconfig, defconfig or a config file"), "tinyconfig",
        "the config the kernel fragment is merged into: tinyconfig, defconfig, or a file "
        "(relative to this config)",
    )
    allow: tuple[Allowance, ...] = setting(
        ListOf(Record(Allowance)), (),
        "image files whose failed checks (ELF, Python imports) are warnings: path and reason",
    )
    post_build: tuple[Path, ...] = setting(
        ListOf(FilePath(must_exist=True)), (),
        "scripts run on the assembled tree before it is packed ($1 and KHIB_TARGET_DIR)",
    )
    post_image: tuple[Path, ...] = setting(
        ListOf(FilePath(must_exist=True)), (),
        "scripts run on the packed image ($1 and KHIB_IMAGE)",
    )
    source_date_epoch: int = setting(
        Int(0, 2**32 - 1), 0, "timestamp clamp for the image (SOURCE_DATE_EPOCH overrides)"
    )
    origin: Origin | None = origin_field()

    @property
    def target(self) -> Arch:
        return ARCHES[self.arch]


def builtin_config(name: str) -> Path | None:
    """A config khib-build ships, by its name with or without .yaml."""
    path = BUILTIN_CONFIGS / (name if name.endswith(".yaml") else f"{name}.yaml")
    return path if "/" not in name and path.is_file() else None


def load_config(path: Path) -> ImageConfig:
    """Read and validate an image config: a file, or a built-in config by its name
    (``khib-x86_64``) when no such file is there."""
    if not path.exists() and len(path.parts) == 1:
        path = builtin_config(path.name) or path
    config: ImageConfig = load(path.resolve(), ImageConfig, builtin_config)
    try:
        FORMATS[config.compression].check_level(config.compression_level)
    except ValueError as exc:
        assert config.origin is not None
        raise config.origin.error("compression_level", str(exc)) from None
    return config
