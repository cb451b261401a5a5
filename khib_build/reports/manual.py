"""Man pages and the bash completion, generated from an argument parser.

khib-build writes them itself rather than through argparse-manpage and shtab: the Debian
package builds them with Debian 12's tools, whose argparse-manpage (1.2) has no extra
sections and whose shtab (1.5) completes only the first verb. The same generator writes
khib-build(1) and, for the Debian package ``khib``, khib(8) from the khib tools' parser.

``python -m khib_build.cli.manual man|bash`` prints khib-build's.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

from khib_build import __version__
from khib_build.settings.options import OPTIONS, help_text


@dataclass(frozen=True)
class Section:
    """A section after the commands: paragraphs (blank-line separated), then terms."""

    title: str
    text: str = ""
    items: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Page:
    """What a man page says beside its parser's options and commands."""

    name: str
    section: int
    source: str  # the package and version, in the footer
    summary: str  # NAME's one line
    description: str = ""  # paragraphs (blank-line separated); else the parser's
    sections: tuple[Section, ...] = ()


EXIT_STATUS = (
    ("0", "success (diff: the images have the same entries)"),
    ("1", "a build, fetch, check or boot failed (diff: the images differ; lint: findings)"),
    ("2", "a bad config, recipe, table or command line, named with its file and line "
          "(diff: an image cannot be read)"),
    ("130", "interrupted"),
)
FILES = (
    ("configs/khib.yaml, configs/khib-x86_64.yaml",
     "the built-in image configs (-c khib, -c khib-x86_64); recipes/ the built-in recipes"),
    ("output/", "the default output dir: the image, manifest.json, kernel.config, logs/, "
                "legal-info/"),
    ("~/.cache/khib-build/cache",
     "the build cache: packages/, reads/, sysroots/, kernel-src/, apt-sources/, locks/"),
    ("~/.cache/khib-build/dl", "the download dir"),
)


def khib_build_page() -> Page:
    """khib-build(1)'s own words."""
    return Page("khib-build", 1, f"khib-build {__version__}",
                "build deterministic initramfs images for kexec jump",
                sections=(Section("EXIT STATUS", items=EXIT_STATUS),
                          Section("ENVIRONMENT", items=environment()),
                          Section("FILES", items=FILES)))


def roff(text: str) -> str:
    """Text as roff prints it literally: backslashes, hyphens and leading dots escaped."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line
                     for line in text.splitlines())


def environment() -> tuple[tuple[str, str], ...]:
    variables = [(o.env, help_text(o)) for o in OPTIONS.values() if o.env]
    return (*variables, ("XDG_CACHE_HOME", "where the user's cache dir is (default: ~/.cache)"),
            ("NO_COLOR", "no colour in the progress display"))


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


def man_page(parser: argparse.ArgumentParser, page: Page, epoch: int | None) -> str:
    """The page: NAME, SYNOPSIS, DESCRIPTION, OPTIONS, COMMANDS (each verb's usage and
    options), then the page's own sections. Dated by ``epoch`` (none: undated)."""
    date = time.strftime("%Y-%m-%d", time.gmtime(epoch)) if epoch is not None else ""
    name = roff(page.name)
    paragraphs = (page.description or parser.description or "").split("\n\n")
    lines = [f'.TH {name.upper()} {page.section} "{date}" "{roff(page.source)}" '
             f'"{name} manual"',
             ".SH NAME", f"{name} \\- {roff(page.summary)}",
             ".SH SYNOPSIS", f"\\fB{name}\\fR [\\fIOPTIONS\\fR] \\fIVERB\\fR "
             "[\\fIVERB OPTIONS\\fR] [\\fIARGUMENTS\\fR]",
             ".SH DESCRIPTION", "\n.PP\n".join(roff(p.strip()) for p in paragraphs),
             ".SH OPTIONS", *options_of(parser), ".SH COMMANDS"]
    for verb, summary, sub in verbs(parser):
        usage = " ".join(sub.format_usage().removeprefix("usage: ").split())
        lines += [f".SS {roff(verb)}", roff(summary), ".PP", f"\\fB{roff(usage)}\\fR",
                  *options_of(sub)]
    for section in page.sections:
        lines.append(f".SH {section.title}")
        if section.text:
            lines.append("\n.PP\n".join(roff(p.strip()) for p in section.text.split("\n\n")))
        lines += [f".TP\n{roff(term)}\n{roff(text)}" for term, text in section.items]
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

