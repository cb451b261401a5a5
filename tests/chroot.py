"""A command in a Debian root made by mmdebstrap (tests/system.py's, tests/dumptool.py's):
/proc, /sys and /dev mounted in a mount namespace of its own, so that nothing stays
mounted on the host."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

MOUNT_FAILED = 99
SCRIPT = ('mount -t proc proc "$0/proc" && mount -t sysfs sys "$0/sys" && '
          f'mount --bind /dev "$0/dev" || exit {MOUNT_FAILED}; exec chroot "$0" "$@"')


def in_root(root: Path, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``command`` inside ``root``, its output kept. A mount that fails (seen once,
    with runs side by side) is retried; with ``check``, a failing command raises."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8",
           "DEBIAN_FRONTEND": "noninteractive"}
    for _ in range(3):
        done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               SCRIPT, str(root), *command], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, env=env, check=False,
                              timeout=900)
        if done.returncode != MOUNT_FAILED:
            break
        time.sleep(1)
    if check and done.returncode:
        raise RuntimeError(f"in the Debian root: {' '.join(command)} exited "
                           f"{done.returncode}\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return done
