"""``python -m khib_build.cli.manual man|bash``: the man page or the bash completion of
the command line (``make dist`` and ``debian/rules`` write them so)."""

from __future__ import annotations

import sys

from khib_build.cli import parser
from khib_build.reports.manual import bash_completion, man_page

KINDS = {"man": man_page, "bash": bash_completion}

if __name__ == "__main__":
    if sys.argv[1:] not in ([kind] for kind in KINDS):
        sys.exit(f"usage: python -m khib_build.cli.manual {'|'.join(KINDS)}")
    print(KINDS[sys.argv[1]](parser()), end="")
