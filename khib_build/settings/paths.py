"""Where khib-build finds its own data and keeps things outside the output dir."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent


def data_dir(name: str) -> Path:
    """The built-in recipes, configs or overlays: inside the package when installed from
    a wheel, at the top of the source tree when run from it."""
    installed = PACKAGE / "data" / name
    return installed if installed.is_dir() else PACKAGE.parent / name


def user_cache_root(environ: Mapping[str, str]) -> Path:
    """khib-build's folder in the user's cache dir (XDG_CACHE_HOME, else ~/.cache)."""
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "khib-build"
