"""Where khib-build finds its own data and keeps things outside the output dir."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """The built-in recipes, configs or overlays: inside the package when installed from
    a wheel, at the top of the source tree when run from it."""
    installed = PACKAGE / "data" / name
    return installed if installed.is_dir() else PACKAGE.parent / name


def user_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "khib-build"


def cache_dir(flag: Path | None = None) -> Path:
    """The build cache: the flag, else KHIB_CACHE_DIR, else the user's cache dir."""
    env = os.environ.get("KHIB_CACHE_DIR")
    return (flag or (Path(env) if env else user_cache_root() / "cache")).resolve()


def download_dir(flag: Path | None = None, configured: Path | None = None) -> Path:
    """The download dir: the flag, else KHIB_DL_DIR, else the config's, else the cache dir's."""
    env = os.environ.get("KHIB_DL_DIR")
    chosen = flag or (Path(env) if env else None) or configured or user_cache_root() / "dl"
    return chosen.resolve()
