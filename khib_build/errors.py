"""Errors meant for people: each carries its own exit status and location."""

from __future__ import annotations

from pathlib import Path

# Characters that end a line for str.splitlines() or a terminal.
_BREAKS = {ord(c): c.encode("unicode_escape").decode() for c in
           "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


def one_line(text: str) -> str:
    """``text`` with every line-breaking character spelt as an escape (a file name it
    quotes may hold one)."""
    return text.translate(_BREAKS)


class KhibError(Exception):
    """Base of every error khib-build reports without a traceback."""

    exit_code = 1


class UsageError(KhibError):
    """A bad command line: exit status 2."""

    exit_code = 2


class ConfigError(KhibError):
    """A bad image config or recipe, located by file and line: exit status 2."""

    exit_code = 2

    def __init__(self, path: Path | str, line: int | None, message: str,
                 column: int | None = None) -> None:
        self.path = Path(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line else str(self.path)
        if line and column:
            where += f":{column}"
        super().__init__(one_line(f"{where}: {message}"))


class FetchError(KhibError):
    """A source could not be obtained from any origin: exit status 1."""


class BuildError(KhibError):
    """A package step failed: names the package, the step and its log."""

    def __init__(self, package: str, step: str, log: Path, tail: str) -> None:
        self.package = package
        self.step = step
        self.log = log
        text = f"package {package}: step '{step}' failed; log: {log}"
        if tail:
            text += "\n--- last lines of the log ---\n" + tail
        super().__init__(text)


class PackError(KhibError):
    """The tree cannot be packed as the kernel would read it: exit status 1."""
