"""kind: commands (the default): the recipe's build and install commands, nothing else."""

from __future__ import annotations

from khib_build.engine.kinds.base import COMMANDS, Kind


class Commands(Kind):
    name = "commands"
    summary = "the recipe's build and install commands"
    keys = COMMANDS


KIND = Commands()
