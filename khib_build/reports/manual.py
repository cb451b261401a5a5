"""The man page and the bash completion, both generated from the argument parser.

khib-build writes them itself rather than through argparse-manpage and shtab: the Debian
package builds them with Debian 12's tools, whose argparse-manpage (1.2) has no extra
sections and whose shtab (1.5) completes only the first verb.

``python -m khib_build.cli.manual man|bash`` prints one of them.
"""

from __future__ import annotations

import argparse
import os
import time

from khib_build import __version__
from khib_build.settings.options import OPTIONS, help_text

SUMMARY = "build deterministic initramfs images for kexec jump"
EXIT_STATUS = [
    ("0", "success (diff: the images have the same entries)"),
    ("1", "a build, fetch, check or boot failed (diff: the images differ; lint: findings)"),
    ("2", "a bad config, recipe, table or command line, named with its file and line "
          "(diff: an image cannot be read)"),
    ("130", "interrupted"),
]
FILES = [
    ("configs/khib.yaml, configs/khib-x86_64.yaml",
     "the built-in image configs (-c khib, -c khib-x86_64); recipes/ the built-in recipes"),
    ("output/", "the default output dir: the image, manifest.json, kernel.config, logs/, "
                "legal-info/"),
    ("~/.cache/khib-build/cache",
     "the build cache: packages/, reads/, sysroots/, kernel-src/, apt-sources/, locks/"),
    ("~/.cache/khib-build/dl", "the download dir"),
]


def roff(text: str) -> str:
    """Text as roff prints it literally: backslashes, hyphens and leading dots escaped."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line
                     for line in text.splitlines())


def environment() -> list[tuple[str, str]]:
    variables = [(o.env, help_text(o)) for o in OPTIONS.values() if o.env]
    return [*variables, ("XDG_CACHE_HOME", "where the user's cache dir is (default: ~/.cache)"),
            ("NO_COLOR", "no colour in the progress display")]


def verbs(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """Each verb's name, one-line help and parser, in the order --help lists them."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            found += [(name, helps.get(name, ""), sub) for name, sub in action.choices.items()]
    return found


def options_of(parser: argparse.ArgumentParser) -> list[str]:
    """A parser's options as man page entries: the flags (with their value) and the help."""
    entries = []
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        value = f" {action.metavar or action.dest.upper()}" if action.nargs != 0 else ""
        flags = ", ".join(f"\\fB{roff(flag)}\\fR{roff(value)}" for flag in action.option_strings)
        text = (action.help or "").replace("%(default)s", str(action.default))
        entries.append(f".TP\n{flags}\n{roff(text)}")
    return entries


def man_page(parser: argparse.ArgumentParser) -> str:
    """khib-build(1): NAME, SYNOPSIS, DESCRIPTION, OPTIONS, COMMANDS, EXIT STATUS,
    ENVIRONMENT and FILES.  Dated by SOURCE_DATE_EPOCH when it is set."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    date = time.strftime("%Y-%m-%d", time.gmtime(int(epoch))) if epoch else ""
    lines = [f'.TH KHIB\\-BUILD 1 "{date}" "khib\\-build {__version__}" "khib\\-build manual"',
             ".SH NAME", f"khib\\-build \\- {roff(SUMMARY)}",
             ".SH SYNOPSIS", "\\fBkhib\\-build\\fR [\\fIOPTIONS\\fR] \\fIVERB\\fR "
             "[\\fIVERB OPTIONS\\fR] [\\fIARGUMENTS\\fR]",
             ".SH DESCRIPTION", roff(parser.description or ""),
             ".SH OPTIONS", *options_of(parser), ".SH COMMANDS"]
    for name, summary, sub in verbs(parser):
        usage = " ".join(sub.format_usage().removeprefix("usage: ").split())
        lines += [f".SS {roff(name)}", roff(summary), ".PP", f"\\fB{roff(usage)}\\fR",
                  *options_of(sub)]
    for title, items in (("EXIT STATUS", EXIT_STATUS), ("ENVIRONMENT", environment()),
                         ("FILES", FILES)):
        lines.append(f".SH {title}")
        lines += [f".TP\n{roff(term)}\n{roff(text)}" for term, text in items]
    return "\n".join(lines) + "\n"


def bash_completion(parser: argparse.ArgumentParser) -> str:
    """A bash completion: the verbs, each verb's options, the values of options and
    arguments that have choices, and files for every other value."""
    names = [name for name, _, _ in verbs(parser)]
    cases = [f'        "") flags="{" ".join(flags_of(parser))}"; words="{" ".join(names)}" ;;']
    values = []
    for name, _, sub in verbs(parser):
        choices = [c for a in sub._actions if not a.option_strings and a.choices
                   for c in a.choices]
        cases.append(f'        {name}) flags="{" ".join(flags_of(sub))}"; '
                     f'words="{" ".join(choices)}" ;;')
        for action in sub._actions:
            if action.option_strings and action.nargs != 0:
                pattern = "|".join(f'"{name} {flag}"' for flag in action.option_strings)
                values.append(f'        {pattern}) words="{" ".join(action.choices or ())}"'
                              "; flags=\"\" ;;")
    return "\n".join([
        "# bash completion for khib-build (generated from its argument parser)",
        "_khib_build() {",
        "    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}",
        '    local verb="" flags="" words="" i',
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        f"        case ${{COMP_WORDS[i]}} in {'|'.join(names)}) verb=${{COMP_WORDS[i]}}; "
        "break ;; esac",
        "    done",
        '    case "$verb $prev" in',
        *values,
        "        *) case $verb in",
        *("    " + case for case in cases),
        "           esac ;;",
        "    esac",
        '    [[ $cur == -* ]] && words=$flags',
        '    COMPREPLY=($(compgen -W "$words" -- "$cur"))',
        "}",
        "complete -o default -F _khib_build khib-build",
        ""])


def flags_of(parser: argparse.ArgumentParser) -> list[str]:
    return [flag for action in parser._actions for flag in action.option_strings]

