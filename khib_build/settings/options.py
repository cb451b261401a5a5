"""How to run: every run option declared once, with its flags, its environment variable
and its default. The command line, ``--help`` and the precedence (flag, then
environment, then the image config, then the default) all come from this table.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from khib_build.errors import UsageError
from khib_build.settings.config import ImageConfig
from khib_build.settings.kinds import FilePath, Flag, Int, Optional, Seconds, Str
from khib_build.settings.paths import data_dir, user_cache_root
from khib_build.settings.schema import Computed, Setting, setting, settings_of


@dataclass(frozen=True, kw_only=True)
class Options:
    """One run's options, resolved from the command line and the environment."""

    config: Path = setting(
        FilePath(), Computed(lambda _env: data_dir("configs") / "khib.yaml",
                             "the built-in configs/khib.yaml"),
        "image config: a file, or a built-in config by name (khib, khib-x86_64)",
        flags=("-c", "--config"), metavar="CONFIG")
    outdir: Path = setting(FilePath(is_dir=True), Path("output"), "output dir",
                           flags=("-o", "--outdir"), metavar="OUTDIR")
    dl_dir: Path | None = setting(
        Optional(FilePath(is_dir=True)), None, "download dir", flags=("--dl-dir",),
        env="KHIB_DL_DIR", metavar="DL_DIR",
        shown="the config's download_dir, else the user's cache dir's dl/")
    cache_dir: Path = setting(
        FilePath(is_dir=True), Computed(lambda env: user_cache_root(env) / "cache",
                                        "~/.cache/khib-build/cache"),
        "build cache", flags=("--cache-dir",), env="KHIB_CACHE_DIR", metavar="CACHE_DIR")
    no_cache: bool = setting(Flag(), False, "build every package from scratch; neither read "
                             "nor write cached packages", flags=("--no-cache",))
    offline: bool = setting(Flag(), False, "use only the download dir and file:// mirrors",
                            flags=("--offline",))
    fetch_deadline: float = setting(Seconds(), 300.0, "seconds one download attempt may take "
                                    "in all", flags=("--fetch-deadline",), metavar="S")
    fetch_retries: int = setting(Int(0), 2, "retries at one origin after a transient failure",
                                 flags=("--fetch-retries",), metavar="N")
    jobs: int = setting(Int(1), Computed(lambda _env: os.cpu_count() or 1, "the CPU count"),
                        "job budget shared by all builds", flags=("-j", "--jobs"),
                        metavar="N")
    no_wait: bool = setting(Flag(), False, "fail at once if another run holds the output "
                            "dir, do not wait", flags=("--no-wait",))
    remote_cache: str | None = setting(
        Optional(Str(r"https?://\S+", "an http(s):// URL")), None,
        "shared cache: a Bazel HTTP remote cache", flags=("--remote-cache",),
        env="KHIB_REMOTE_CACHE", metavar="URL")
    remote_cache_read_only: bool = setting(
        Flag(), False, "only read the shared cache", flags=("--remote-cache-read-only",),
        env="KHIB_REMOTE_CACHE_READ_ONLY")
    remote_timeout: float = setting(Seconds(), 10.0, "connect/read timeout of the shared "
                                    "cache", flags=("--remote-timeout",), metavar="S")
    explain: bool = setting(Flag(), False, "say which inputs changed for each package that "
                            "is built", flags=("--explain",))
    quiet: bool = setting(Flag(), False, "print only results and errors",
                          flags=("-q", "--quiet"))
    verbose: bool = setting(Flag(), False, "also print the commands package builds run",
                            flags=("-v", "--verbose"))
    source_date_epoch: int | None = setting(
        Optional(Int(0)), None, "timestamp clamp for the image, over the config's",
        env="SOURCE_DATE_EPOCH", shown="the config's source_date_epoch")


OPTIONS: dict[str, Setting] = settings_of(Options)


def help_text(option: Setting) -> str:
    """An option's help with its default, as ``--help`` shows it."""
    default = option.described_default()
    if option.env:
        default = f"{option.env}, else {default}"
    return f"{option.help} (default: {default})" if not isinstance(option.kind, Flag) \
        else option.help + (f" (default: {option.env})" if option.env else "")


def from_environment(option: Setting, environ: Mapping[str, str]) -> Any:
    """An option's value from its environment variable, checked like its flag."""
    text = environ.get(option.env) if option.env else None
    if not text:
        return None
    try:
        return option.kind.from_text(text)
    except ValueError as exc:
        raise UsageError(f"{option.env}={text!r}: {exc}") from None


def resolve(given: Mapping[str, Any], environ: Mapping[str, str],
            taken: Iterable[str]) -> Options:
    """The run's options: for each one the verb takes, its flag if given, else its
    environment variable; else (and for the rest) its default."""
    values: dict[str, Any] = {}
    wanted = set(taken)
    for name, option in OPTIONS.items():
        value = given.get(name)
        if (value is None or value is False) and name in wanted:
            value = from_environment(option, environ)
        values[name] = option.default_for(environ) if value is None else value
    return Options(**values)


def download_dir(options: Options, config: ImageConfig, environ: Mapping[str, str]) -> Path:
    """The download dir: the option, else the config's, else the user cache's dl/."""
    return (options.dl_dir or config.download_dir or user_cache_root(environ) / "dl").resolve()


def epoch(options: Options, config: ImageConfig | None) -> int:
    """The image's timestamp clamp: SOURCE_DATE_EPOCH, else the config's, else the
    config table's default."""
    if options.source_date_epoch is not None:
        return options.source_date_epoch
    return config.source_date_epoch if config is not None \
        else settings_of(ImageConfig)["source_date_epoch"].default
