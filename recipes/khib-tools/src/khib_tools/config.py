"""/etc/khib.conf: a system's hibernation settings, as the Debian package installs them.

``NAME=value`` lines (``#`` comments, values optionally quoted): the same file is read by
``khib hibernate --config`` and sourced by the initramfs's resume script. DEVICE is the
partition the image and B's boot area go to, KEY the file the image is sealed with (empty:
unsealed), WINDOW B's START:SIZE (empty: khib's default), KERNEL and INITRD B's.
"""

from __future__ import annotations

import shlex
from pathlib import Path

NAMES = ("DEVICE", "KEY", "WINDOW", "KERNEL", "INITRD")


class ConfigError(Exception):
    """A line the file cannot hold: the message names the file and the line."""


def read(path: Path) -> dict[str, str]:
    """The settings a config file gives (names absent or empty are left out)."""
    settings: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        name, equals, value = text.partition("=")
        if not equals or name not in NAMES:
            raise ConfigError(f"{path}:{number}: expected one of {', '.join(NAMES)} as "
                              f"NAME=value, not {text!r}")
        try:
            words = shlex.split(value)
        except ValueError as exc:
            raise ConfigError(f"{path}:{number}: {exc}") from None
        if len(words) > 1:
            raise ConfigError(f"{path}:{number}: {name} takes one value (quote it)")
        if words:
            settings[name] = words[0]
    return settings
