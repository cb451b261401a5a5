"""Checks of the assembled image, as Buildroot's check-bin-arch and check-host-rpath.

Every ELF file must be of the image's class and machine; its interpreter (``PT_INTERP``)
and each library it needs (``DT_NEEDED``) must be in the image, unless it is static; no
RPATH or RUNPATH may point outside the image.  Libraries are looked for as glibc's
loader does: RPATH (when there is no RUNPATH), RUNPATH, the folders of the image's
``/etc/ld.so.conf``, then the multiarch and plain ``/lib`` and ``/usr/lib``.  The image
is read as a :class:`View`: the tree before packing, or a packed image for ``lint``.
"""

from __future__ import annotations

import fnmatch
import io
import posixpath
import stat
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import libarchive
from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

from khib_build.fsutil import walk
from khib_build.image.devtable import TableEntry
from khib_build.image.segments import segments
from khib_build.settings.config import Arch, ImageConfig

ELF_MAGIC = b"\x7fELF"
MAX_HOPS = 40  # symlinks followed in one lookup, as the kernel's limit


@dataclass(frozen=True)
class Finding:
    """One problem of one image file; warnings do not fail the build."""

    path: str  # in the image, without the leading slash
    owner: str  # the package (or "overlay", "table") that put it there
    message: str
    severity: str = "error"
    check: str = "elf"  # or "python"

    def text(self) -> str:
        return f"{self.severity}: /{self.path} (from {self.owner}): {self.message}"

    def as_dict(self) -> dict[str, str]:
        return {"path": "/" + self.path, "owner": self.owner, "message": self.message,
                "severity": self.severity, "check": self.check}


@dataclass
class View:
    """The image's entries: regular files (content read on demand), symlinks, folders."""

    files: dict[str, Callable[[], bytes]] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)

    def resolve(self, path: str) -> str | None:
        """``path`` (absolute in the image) with every symlink followed, or None if some
        part of it is missing."""
        parts = [p for p in path.split("/") if p]
        done: list[str] = []
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                done = done[:-1]
                continue
            if part == ".":
                continue
            current = "/".join([*done, part])
            if current in self.links:
                hops += 1
                if hops > MAX_HOPS:
                    return None
                target = self.links[current]
                parts = [p for p in target.split("/") if p] + parts
                if target.startswith("/"):
                    done = []
                continue
            if current not in self.files and current not in self.dirs:
                return None
            done.append(part)
        return "/".join(done)

    def is_file(self, path: str) -> bool:
        found = self.resolve(path)
        return found is not None and found in self.files

    def is_dir(self, path: str) -> bool:
        found = self.resolve(path)
        return found is not None and (found in self.dirs or found == "")


def tree_view(root: Path, tables: Mapping[str, TableEntry]) -> View:
    """The view of an assembled tree plus what the tables add to it."""
    view = View()
    for rel, path, info in walk(root):
        if stat.S_ISLNK(info.st_mode):
            view.links[rel] = str(path.readlink())
        elif stat.S_ISDIR(info.st_mode):
            view.dirs.add(rel)
        elif stat.S_ISREG(info.st_mode):
            view.files[rel] = path.read_bytes
    for rel, entry in tables.items():
        if entry.target:
            view.links[rel] = entry.target
        elif entry.kind == "dir":
            view.dirs.add(rel)
        elif entry.kind == "file" and entry.source is not None:
            view.files[rel] = entry.source.read_bytes
    return view


def image_view(image: Path) -> View:
    """The view of a packed image: the last segment's entry of a path wins, as in the
    kernel; only ELF files keep their content."""
    view = View()
    for segment in segments(image):
        with libarchive.file_reader(str(segment.cpio)) as archive:
            for entry in archive:
                rel = entry.pathname.lstrip("/").removeprefix("./")
                for place in (view.files, view.links):
                    place.pop(rel, None)
                view.dirs.discard(rel)
                if entry.issym:
                    view.links[rel] = entry.linkpath
                elif entry.isdir:
                    view.dirs.add(rel)
                elif entry.isfile:
                    data = b"".join(entry.get_blocks())
                    view.files[rel] = (lambda data=data: data) if data[:4] == ELF_MAGIC \
                        else (lambda: b"")
    return view


def library_dirs(view: View, arch: Arch) -> list[str]:
    """Where the loader looks after RPATH and RUNPATH: ld.so.conf's folders (and those of
    the files it includes), then the multiarch and default ones."""
    found: list[str] = []
    pending = ["etc/ld.so.conf"]
    while pending:
        path = view.resolve(pending.pop(0))
        if path is None or path not in view.files:
            continue
        for line in view.files[path]().decode(errors="replace").splitlines():
            words = line.split("#", 1)[0].split()
            if words[:1] == ["include"]:
                pending += sorted(p for p in view.files for pattern in words[1:]
                                  if fnmatch.fnmatchcase(p, pattern.lstrip("/")))
            elif words:
                found.append(words[0])
    return [*found, f"/lib/{arch.multiarch}", f"/usr/lib/{arch.multiarch}", "/lib", "/usr/lib"]


def elf_problems(path: str, data: bytes, view: View, arch: Arch, defaults: list[str]
                 ) -> list[str]:
    """What is wrong with one ELF file, in words."""
    try:
        elf = ELFFile(io.BytesIO(data))
        machine, elf_class = elf["e_machine"], elf.elfclass
        if (elf_class, machine) != (arch.elf_class, arch.elf_machine):
            return [f"built for {elf_class}-bit {machine}, not the image's {arch.name} "
                    f"({arch.elf_class}-bit {arch.elf_machine})"]
        interp = next((s.get_interp_name() for s in elf.iter_segments()
                       if s["p_type"] == "PT_INTERP"), None)
        dynamic = next((s for s in elf.iter_sections() if isinstance(s, DynamicSection)), None)
        tags = [(t.entry.d_tag, t) for t in dynamic.iter_tags()] if dynamic else []
    except (ELFError, ValueError, KeyError, IndexError, struct.error) as exc:
        return [f"not a readable ELF file: {exc}"]  # cut short or corrupt
    problems = []
    if interp is not None and not view.is_file(interp):
        problems.append(f"its loader {interp} is not in the image (link it statically, or "
                        "add a package that brings the C library)")
    origin = "/" + posixpath.dirname(path)
    rpath = [d for tag, t in tags if tag == "DT_RPATH" for d in t.rpath.split(":")]
    runpath = [d for tag, t in tags if tag == "DT_RUNPATH" for d in t.runpath.split(":")]
    for folder in rpath + runpath:
        expanded = folder.replace("$ORIGIN", origin).replace("${ORIGIN}", origin)
        if not expanded.startswith("/") or not view.is_dir(expanded):
            problems.append(f"its RPATH {folder} points outside the image")
    search = [d.replace("$ORIGIN", origin).replace("${ORIGIN}", origin)
              for d in (rpath if not runpath else []) + runpath] + defaults
    for tag, t in tags:
        if tag == "DT_NEEDED" and not any(view.is_file(posixpath.join(d, t.needed))
                                          for d in search):
            problems.append(f"needs {t.needed}, which is not in the image (looked in "
                            f"{', '.join(dict.fromkeys(search))})")
    return problems


def check_elf(view: View, arch: Arch, owners: Mapping[str, str]) -> list[Finding]:
    """Every problem of every ELF file in the image."""
    defaults = library_dirs(view, arch)
    found = []
    for path in sorted(view.files):
        data = view.files[path]()
        if data[:4] != ELF_MAGIC:
            continue
        found += [Finding(path, owners.get(path, "table"), problem)
                  for problem in elf_problems(path, data, view, arch, defaults)]
    return found


def downgrade(findings: Iterable[Finding], reasons: Mapping[str, str]) -> list[Finding]:
    """Findings of the files the config lets pass (path to reason) become warnings."""
    return [replace(f, severity="warning", message=f"{f.message} (allowed: {reasons[f.path]})")
            if f.path in reasons else f for f in findings]


def python_findings(problems: Iterable[Mapping[str, object]], owners: Mapping[str, str]
                    ) -> list[Finding]:
    """The Python import problems (file, line, severity, message) as findings."""
    return [Finding(str(p["file"]), owners.get(str(p["file"]), "table"),
                    f"line {p['line']}: {p['message']}", str(p["severity"]), "python")
            for p in problems]


def image_checks(view: View, config: ImageConfig, owners: Mapping[str, str],
                 python_problems: Iterable[Mapping[str, object]]) -> list[Finding]:
    """Every finding of an image (its ELF files, its Python imports as the build found
    them), those of the files the config's ``allow`` names turned into warnings."""
    return downgrade(check_elf(view, config.target, owners)
                     + python_findings(python_problems, owners),
                     {a.path.lstrip("/"): a.reason for a in config.allow})
