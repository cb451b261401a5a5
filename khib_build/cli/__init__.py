"""The ``khib-build`` command line: a table of verbs over the run options' table.

Exit status: 0 success, 1 a build, fetch or boot failure, 2 a bad config, recipe or usage,
130 interrupted.  Errors are one message, never a traceback.

Each handler imports the stages it drives, so a quick verb such as ``pack`` or
``inspect`` does not pay for importing the whole build pipeline.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from khib_build import __version__, report
from khib_build.cli import build, files, kernel, reports
from khib_build.cli.verbs import REPORTING, add_option, add_verb, options_from
from khib_build.errors import KhibError, UsageError
from khib_build.settings.kinds import suggest
from khib_build.settings.options import OPTIONS

# argparse's "invalid choice: 'x' (choose from 'a', 'b')", to suggest the closest.
INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")
CHOICE = re.compile(r"'([^']*)'")
VERBS = (*build.VERBS, *reports.VERBS, *files.VERBS, *kernel.VERBS)


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as khib-build errors (exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        choice = INVALID_CHOICE.search(message)
        hint = suggest(choice[1], CHOICE.findall(choice[2])) if choice else ""
        raise UsageError(f"{message}{hint} (see {self.prog} --help)")


def parser() -> argparse.ArgumentParser:
    top = Parser(prog="khib-build", description="Build deterministic initramfs images for "
                 "kexec jump (kexec-based hibernation).")
    top.add_argument("--version", action="version", version=f"khib-build {__version__}")
    for name in REPORTING:
        add_option(top, OPTIONS[name])
    verbs = top.add_subparsers(dest="verb", metavar="VERB", parser_class=Parser)
    for verb in VERBS:
        add_verb(verbs, verb)
    return top


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
        if args.verb is None:
            parser().print_help()
            return 2
        options = options_from(args)
        with report.settings(quiet=options.quiet, verbose=options.verbose):
            return args.handler(args, options)
    except KhibError as exc:
        print(f"khib-build: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("khib-build: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, as other tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"khib-build: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
