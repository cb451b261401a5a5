"""Allow ``python -m khib_build``."""

from khib_build.cli import main

raise SystemExit(main())
