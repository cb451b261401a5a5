"""``python -m khib_build.cli.manual man|bash``: the man page or the bash completion of
the command line (``make dist`` and ``debian/rules`` write them so); the page is dated
by SOURCE_DATE_EPOCH when it is set."""

from __future__ import annotations

import argparse
import os
import sys

from khib_build.cli import parser
from khib_build.reports.manual import bash_completion, khib_build_page, man_page


def manual(top: argparse.ArgumentParser) -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    return man_page(top, khib_build_page(), int(epoch) if epoch else None)


KINDS = {"man": manual, "bash": bash_completion}

if __name__ == "__main__":
    if sys.argv[1:] not in ([kind] for kind in KINDS):
        sys.exit(f"usage: python -m khib_build.cli.manual {'|'.join(KINDS)}")
    print(KINDS[sys.argv[1]](parser()), end="")
