"""What a verb is: its help, the run options it takes (rows of the settings table), its
own arguments and its handler. Handlers get the parsed arguments and the run options."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from khib_build.settings.kinds import Flag, Kind
from khib_build.settings.options import OPTIONS, Options, help_text, resolve
from khib_build.settings.schema import Setting

Handler = Callable[[argparse.Namespace, Options], int]

# The run options each family of verbs takes, by their names in the settings table.
CONFIG = ("config",)
PLACES = ("config", "outdir", "cache_dir")
PINNED = ("dl_dir", "offline", "fetch_deadline", "fetch_retries")  # to fetch a pinned file
FETCH = (*PLACES, "no_cache", *PINNED, "jobs", "source_date_epoch")
BUILD = (*FETCH, "no_wait", "remote_cache", "remote_cache_read_only", "remote_timeout",
         "explain")
REPORTING = ("quiet", "verbose")  # every verb, before or after its name


@dataclass(frozen=True)
class Argument:
    """One of a verb's own arguments, as argparse takes it."""

    names: tuple[str, ...]
    spec: dict[str, Any] = field(default_factory=dict)


def arg(*names: str, **spec: Any) -> Argument:
    return Argument(names, spec)


JSON = arg("--json", action="store_true", help="one JSON object")


@dataclass(frozen=True)
class Verb:
    name: str
    help: str
    description: str
    handler: Handler
    options: tuple[str, ...] = ()
    arguments: tuple[Argument, ...] = ()


def typed(kind: Kind) -> Callable[[str], Any]:
    """An argparse type that checks its text as ``kind`` does (bad text: exit 2)."""
    def parse(text: str) -> Any:
        try:
            return kind.from_text(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def add_option(parser: argparse.ArgumentParser, option: Setting) -> None:
    """A flag for one row of the settings table; absent from the namespace unless given."""
    parse = typed(option.kind)
    if isinstance(option.kind, Flag):
        parser.add_argument(*option.flags, dest=option.name, action="store_true",
                            default=argparse.SUPPRESS, help=help_text(option))
    else:
        parser.add_argument(*option.flags, dest=option.name, type=parse,
                            default=argparse.SUPPRESS, metavar=option.metavar,
                            help=help_text(option))


def add_verb(verbs: argparse._SubParsersAction, verb: Verb) -> None:
    parser = verbs.add_parser(verb.name, help=verb.help, description=verb.description)
    for name in (*verb.options, *REPORTING):
        if OPTIONS[name].flags:  # (the rest are read from the environment alone)
            add_option(parser, OPTIONS[name])
    for argument in verb.arguments:
        parser.add_argument(*argument.names, **argument.spec)
    parser.set_defaults(handler=verb.handler, option_names=verb.options)


def options_from(args: argparse.Namespace) -> Options:
    """The run options: the flags given, then the environment, then the table's defaults."""
    given = {name: getattr(args, name) for name in OPTIONS if hasattr(args, name)}
    return resolve(given, os.environ, (*args.option_names, *REPORTING))


def shown(path: Path) -> str:
    """A path relative to the working directory when it lies below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
