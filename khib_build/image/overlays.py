"""Overlays: folders laid over the image; ``*.j2`` files are rendered with jinja2.

Everything is planned (and every template rendered) before the output dir is touched,
so a template error stops the run with nothing written.  Modes are normalised the way
git stores them (0755 if any execute bit is set, else 0644), so the image does not
depend on the umask of the checkout.
"""

from __future__ import annotations

import os
import shutil
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from khib_build.errors import ConfigError, PackError
from khib_build.fsutil import inside, make_dirs, read_text

TEMPLATE_SUFFIX = ".j2"


@dataclass(frozen=True)
class OverlayItem:
    """One path an overlay puts in the image."""

    path: str
    kind: str  # file, dir, symlink
    mode: int = 0o755
    source: Path | None = None  # a file copied as it is
    content: bytes | None = None  # a rendered template
    target: str = ""  # a symlink's target


def normal_mode(path: Path) -> int:
    return 0o755 if os.lstat(path).st_mode & 0o111 else 0o644


def plan(overlays: Sequence[Path], context: dict[str, Any]) -> list[OverlayItem]:
    """What the overlays put in the image, in order; later overlays win, except that a
    folder cannot go where an earlier overlay put a file or a symlink (refused here,
    before any build, naming both overlays)."""
    items: list[OverlayItem] = []
    placed: dict[str, tuple[OverlayItem, Path]] = {}
    for top in overlays:
        env = jinja2.Environment(loader=template_loader(top), autoescape=False,
                                 undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
        for folder, dirs, files in os.walk(top):
            dirs.sort()
            base = Path(folder)
            for name in sorted(dirs + files):
                path = base / name
                rel = path.relative_to(top).as_posix()
                if path.is_symlink():
                    items.append(OverlayItem(rel, "symlink", 0o777, target=os.readlink(path)))
                elif path.is_dir():
                    items.append(OverlayItem(rel, "dir"))
                elif name.endswith(TEMPLATE_SUFFIX):
                    content = render(env, rel, path, context)
                    items.append(OverlayItem(rel.removesuffix(TEMPLATE_SUFFIX), "file",
                                             normal_mode(path), content=content))
                else:
                    items.append(OverlayItem(rel, "file", normal_mode(path), source=path))
                over_non_folder(items[-1], top, placed)
    return items


def over_non_folder(item: OverlayItem, top: Path,
                    placed: dict[str, tuple[OverlayItem, Path]]) -> None:
    """Record where ``item`` (of overlay ``top``) goes; a folder where an earlier overlay
    put a file or a symlink is a ConfigError (its contents would be written through it)."""
    earlier = placed.get(item.path)
    if item.kind == "dir" and earlier and earlier[0].kind != "dir" and earlier[1] != top:
        what = (f"a symlink (to {earlier[0].target})" if earlier[0].kind == "symlink"
                else "a file")
        raise ConfigError(top / item.path, None,
                          f"overlay {top} has a folder /{item.path} where the earlier overlay "
                          f"{earlier[1]} puts {what}: an overlay folder cannot go over a "
                          "non-folder")
    placed[item.path] = (item, top)


def template_loader(top: Path) -> jinja2.BaseLoader:
    """Templates below ``top``, each read through fsutil.read_text (UTF-8, or an error
    naming the file, line and column)."""
    def load(name: str) -> tuple[str, str, Callable[[], bool]]:
        path = top / name
        if ".." in name.split("/") or not path.is_file():
            raise jinja2.TemplateNotFound(name)
        return read_text(path), str(path), lambda: True

    return jinja2.FunctionLoader(load)


def render(env: jinja2.Environment, rel: str, path: Path, context: dict[str, Any]) -> bytes:
    """Render one template; an error names the template file and line."""
    try:
        return env.get_template(rel).render(context).encode()
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(path, exc.lineno, f"template error: {exc.message}") from None
    except jinja2.TemplateError as exc:
        line = next((frame.lineno for frame in traceback.extract_tb(exc.__traceback__)
                     if frame.filename == str(path)), None)
        names = ", ".join(sorted(context))
        raise ConfigError(path, line, f"template error: {exc}; variables: {names}") from None


def apply(items: Sequence[OverlayItem], root: Path) -> None:
    """Write the planned items into ``root``."""
    for item in items:
        dest = inside(root, item.path)
        if item.kind == "dir":
            if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
                raise PackError(f"/{item.path}: overlay folder over a non-folder")
            make_dirs(dest)
            continue
        if dest.is_symlink() or dest.is_file():
            dest.unlink()
        elif dest.is_dir():
            shutil.rmtree(dest)
        if item.kind == "symlink":
            os.symlink(item.target, dest)
        elif item.content is not None:
            dest.write_bytes(item.content)
            os.chmod(dest, item.mode)
        else:
            assert item.source is not None
            shutil.copyfile(item.source, dest)
            os.chmod(dest, item.mode)
