"""reprotest (Debian's) around khib-build, for test_reprotest and test_reproducible: the
tree it copies for each build, which of its variations apply here and why the others do
not, a run, and where its reports are kept."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import REPO, run_options, user_download_dir

DATA = REPO / "tests" / "data" / "reprotest"

# reprotest's variations that every run applies (its experiment build varies them, its
# control build fixes them) ...
VARIED = ("environment", "build_path", "kernel", "aslr", "num_cpus", "domain_host", "home",
          "locales", "exec_path", "timezone", "umask")
# ... and those it leaves out, with why.
LEFT_OUT = {
    "time": "needs faketime, which the host lacks (make setup does not install it); "
            "the clock khib-build stamps is SOURCE_DATE_EPOCH, and the two builds run at "
            "different times of the real clock anyway",
    "fileordering": "needs disorderfs (a FUSE file system), which the host lacks",
    "user_group": "needs sudo, which the host lacks, and users able to read the checkout "
                  "and its venv and to write the shared build cache",
}
# The locale the experiment build runs in: reprotest's choice (Estonian sorts letters
# unlike English), compiled for the run with localedef, as the host has only C.UTF-8.
LOCALE = "et_EE.UTF-8"

# The experiment's report names: reprotest calls the varied build "experiment-1".
REPORT = "experiment-1.diffoscope"
# What reprotest compares: the image and its manifest, in the output dir "out".
ARTIFACTS = ("out/rootfs.gz", "out/manifest.json")
# The default image's packages (configs/khib.yaml, with their dependencies).
DEFAULT_PACKAGES = ("busybox", "kexec-tools", "lz4", "python3", "khib-core", "khib-tools")


@dataclass(frozen=True)
class Run:
    """A reprotest run: its exit status, its output (reprotest's and the builds'), and
    the folder with each build's artifacts and diffoscope's reports."""
    returncode: int
    log: str
    store: Path

    def statuses(self) -> Counter[tuple[str, str]]:
        """(package, status) for each package of each build, from khib-build's summary."""
        return Counter(re.findall(r"^  (\S+) +(up to date|cached|remote|built) +\d",
                                  self.log, re.M))

    def explained(self) -> str:
        """The exit status and the log's end, for a failed assertion."""
        return f"reprotest exit {self.returncode}; its log ends:\n{self.log[-6000:]}"

    def report(self, suffix: str) -> Path:
        """diffoscope's report on the experiment: out (text), html or json."""
        return self.store / f"{REPORT}.{suffix}"


def source_tree(dest: Path) -> Path:
    """What reprotest copies for each build: the repo's configs, recipes and overlays,
    and tests/data/reprotest as reprotest/ (its configs include ../configs/...): the
    build path variation then moves everything the image is made of."""
    (dest / "configs").mkdir(parents=True)
    for path in (REPO / "configs").iterdir():
        if path.is_file():
            shutil.copy2(path, dest / "configs")
    for folder in ("recipes", "overlays"):
        shutil.copytree(REPO / folder, dest / folder)
    shutil.copytree(DATA, dest / "reprotest")
    return dest


def compiled_locale(dest: Path) -> Path:
    """A locale folder (for LOCPATH) holding LOCALE."""
    dest.mkdir()
    subprocess.run(["localedef", "-i", LOCALE.split(".")[0], "-f", "UTF-8",
                    str(dest / LOCALE)], check=True, capture_output=True)
    return dest


def artifacts_dir(name: str) -> Path:
    """Where a run's reports are kept after the test: $KHIB_ARTIFACTS/reprotest/NAME,
    else output/reprotest/NAME in the checkout."""
    return Path(os.environ.get("KHIB_ARTIFACTS") or REPO / "output") / "reprotest" / name


def keep(name: str, run: Run) -> Path:
    """reprotest's output and what it wrote beside the builds (SHA256SUMS, diffoscope's
    reports), copied to artifacts_dir(NAME), replacing an earlier run's."""
    dest = artifacts_dir(name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=dest.parent))
    partial.chmod(0o755)
    (partial / "reprotest.log").write_text(run.log)
    for path in run.store.iterdir() if run.store.is_dir() else ():
        if path.is_file():
            shutil.copy2(path, partial)
    shutil.rmtree(dest, ignore_errors=True)
    partial.rename(dest)
    return dest


def reprotest(name: str, tmp: Path, command: list[str], control: Path | None = None) -> Run:
    """reprotest running ``command`` (in the copied source tree) twice, a control build
    and an experiment varying VARIED, comparing ARTIFACTS with diffoscope (text, HTML
    and JSON reports); with ``control``, a folder holding source-root/out/..., only the
    experiment runs and is compared with it. The build cache and download dir
    are the user's, named explicitly (the home variation moves HOME). Kept as
    keep(NAME)."""
    store = tmp / "store"
    variations = [f"+{v}" for v in VARIED] + [f"locales.locale={LOCALE}"]
    argv = ["reprotest", "--verbosity=1", "--min-cpus=1",
            f"--variations={','.join(variations)}", f"--store-dir={store}",
            "--diffoscope-arg=--text=-",
            f"--diffoscope-arg=--html={store}/{{0}}.diffoscope.html",
            f"--diffoscope-arg=--json={store}/{{0}}.diffoscope.json",
            *([f"--control-build={control}"] if control else []),
            "-c", shlex.join(command), str(source_tree(tmp / "source")), " ".join(ARTIFACTS)]
    env = {**os.environ, "KHIB_CACHE_DIR": str(run_options().cache_dir.resolve()),
           "KHIB_DL_DIR": str(user_download_dir()),
           "LOCPATH": str(compiled_locale(tmp / "locales")), "TMPDIR": str(tmp)}
    result = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, timeout=1800, check=False)
    run = Run(result.returncode, result.stdout, store)
    keep(name, run)
    return run


def varied_as_asked(run: Run) -> bool:
    """reprotest's own account of the experiment: each of VARIED varied, the rest fixed,
    and the locale the one compiled."""
    plan = re.search(r'build "experiment-1": (.*)', run.log)
    return (plan is not None
            and all(f"vary {v}" in plan[1] for v in VARIED)
            and all(f"FIX {v}" in plan[1] for v in LEFT_OUT)
            and f"LC_ALL = {LOCALE}" in run.log)
