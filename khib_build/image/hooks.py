"""The image config's hooks: scripts run on the assembled tree (post_build) and on the
packed image (post_image), as Buildroot's post-build and post-image scripts.

Each runs with the documented environment (:data:`HOOK_VARIABLES`), in a C locale, UTC,
umask 022, with the output dir as its working directory; its output goes to
``<out>/logs/<stage>-<script>.log``.  A failing hook names itself and its log.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from khib_build import report
from khib_build.errors import KhibError

HOOK_VARIABLES = {
    "KHIB_TARGET_DIR": "the assembled image tree (also $1 of a post_build hook)",
    "KHIB_IMAGE": "the packed image (also $1 of a post_image hook; post_image only)",
    "KHIB_OUTPUT_DIR": "the output dir (the hook's working directory)",
    "KHIB_CONFIG_DIR": "the folder of the image config",
    "KHIB_ARCH": "the target architecture",
    "SOURCE_DATE_EPOCH": "the timestamp to stamp into anything the hook writes",
}


def run_hooks(stage: str, scripts: Sequence[Path], argument: Path, variables: dict[str, str],
              out_dir: Path, log_dir: Path) -> None:
    """Run each script of ``stage`` with ``argument`` as $1; the first failure stops."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("LC_")}
    env.update(variables, LC_ALL="C", LANG="C", TZ="UTC")
    for script in scripts:
        report.say(f"{stage}: {script.name}")
        log = log_dir / f"{stage}-{script.name}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        command = [str(script), str(argument)] if os.access(script, os.X_OK) \
            else ["/bin/sh", str(script), str(argument)]
        with log.open("w") as handle:
            status = subprocess.run(command, cwd=out_dir, env=env, stdin=subprocess.DEVNULL,
                                    stdout=handle, stderr=subprocess.STDOUT, umask=0o022,
                                    check=False).returncode
        if status != 0:
            lines = log.read_text(errors="replace").strip().splitlines()[-10:]
            detail = "".join(f"\n  {line}" for line in lines)
            raise KhibError(f"{stage} hook {script} failed (exit status {status}); log: "
                            f"{log}{detail}")
