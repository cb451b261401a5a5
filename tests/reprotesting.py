"""reprotest (Debian's) around khib-build, for test_reprotest and test_reproducible: the
tree it copies for each build, which of its variations apply here and why the one left out
does not, a run, what its builds saw, and where its reports are kept."""

from __future__ import annotations

import grp
import os
import pwd
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import REPO, run_options, user_download_dir

DATA = REPO / "tests" / "data" / "reprotest"

# reprotest's variations that every run applies (its experiment build varies them, its
# control build fixes them) ...
VARIED = ("environment", "build_path", "kernel", "aslr", "num_cpus", "time", "fileordering",
          "domain_host", "home", "locales", "exec_path", "timezone", "umask")
# ... and the one it leaves out, with why.
LEFT_OUT = {
    "user_group": "reprotest runs its builds as another user through `sudo -h localhost`, "
                  "which Debian 12's sudo refuses since its fix for CVE-2025-32462 (a host "
                  "only when listing privileges); BUILD_USER varies the user instead",
}
# The user the experiment build runs as, in place of reprotest's user_group, and its group
# (nogroup): build.sh (in DATA) switches to it in a user namespace of its own when
# reprotest's environment variation sets KHIB_TEST_BUILD_USER. nobody is on every Debian
# system, so the host's /etc/passwd stays as it is; the namespace maps it onto the
# invoking user, so that it uses the session's build cache as a second user uses their own.
BUILD_USER = "nobody"
# reprotest's time variation (faketime): the experiment build's clock runs this many days
# ahead of the real one, which the control build keeps (reprotest picks 180 to 540 days at
# random; fixed here, and another year whatever the date). Under libfaketime 0.9.10 a
# Python thread's timed wait on a lock or an event never ends (the monotonic clock is
# shifted, sem_clockwait's deadlines are not), so khib-build would wait for good for a
# build lock another run held; these builds take none another run wants.
AHEAD_DAYS = 400
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
class Seen:
    """What a build saw as it started (build.sh): its user and group, the clock, and
    recipes/ listed three times, in the order the file system gave."""
    user: str
    group: str
    clock: int
    listings: tuple[tuple[str, ...], ...]

    @classmethod
    def read(cls, path: Path) -> Seen:
        ids, clock, *listings = path.read_text().splitlines()
        user, group = ids.split()
        return cls(user, group, int(clock), tuple(tuple(line.split()) for line in listings))


@dataclass(frozen=True)
class Run:
    """A reprotest run: its exit status, its output (reprotest's and the builds'), the
    folder with each build's artifacts and diffoscope's reports, what each build saw (by
    build: control, experiment-1), and when it ran (by the real clock)."""
    returncode: int
    log: str
    store: Path
    seen: dict[str, Seen]
    started: float
    ended: float

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


def reprotest(name: str, tmp: Path, command: list[str], control: Path | None = None,
              offline: bool = False) -> Run:
    """reprotest running ``command`` (in the copied source tree, through build.sh) twice, a
    control build and an experiment varying VARIED and the user (BUILD_USER), comparing
    ARTIFACTS with diffoscope (text, HTML and JSON reports); with ``control``, a folder
    holding source-root/out/..., only the experiment runs and is compared with it;
    ``offline``: the builds in a network namespace of their own. The build cache and
    download dir are the user's, named explicitly (the home variation moves HOME). Kept
    as keep(NAME)."""
    store = tmp / "store"
    seen = tmp / "seen"
    seen.mkdir()
    variations = [f"+{v}" for v in VARIED] + [
        f"locales.locale={LOCALE}", f"time.faketimes=+{AHEAD_DAYS}days",
        f"environment.variables+=KHIB_TEST_BUILD_USER={BUILD_USER}"]
    build = [*(["unshare", "--net"] if offline else []), "sh", "reprotest/build.sh", *command]
    argv = ["reprotest", "--verbosity=1", "--min-cpus=1",
            f"--variations={','.join(variations)}", f"--store-dir={store}",
            "--diffoscope-arg=--text=-",
            f"--diffoscope-arg=--html={store}/{{0}}.diffoscope.html",
            f"--diffoscope-arg=--json={store}/{{0}}.diffoscope.json",
            *([f"--control-build={control}"] if control else []),
            "-c", shlex.join(build), str(source_tree(tmp / "source")), " ".join(ARTIFACTS)]
    env = {**os.environ, "KHIB_CACHE_DIR": str(run_options().cache_dir.resolve()),
           "KHIB_DL_DIR": str(user_download_dir()),
           "LOCPATH": str(compiled_locale(tmp / "locales")), "TMPDIR": str(tmp),
           "KHIB_TEST_SEEN": str(seen)}
    started = time.time()
    result = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, timeout=1800, check=False)
    # reprotest builds the experiment in build-experiment-1, the control (its build
    # path fixed) in const_build_path.
    builds = {"const_build_path": "control", "build-experiment-1": "experiment-1"}
    run = Run(result.returncode, result.stdout, store,
              {builds[path.name]: Seen.read(path) for path in seen.iterdir()},
              started, time.time())
    keep(name, run)
    return run


def assert_varied(run: Run) -> None:
    """reprotest's own account of the experiment (each of VARIED varied, user_group fixed,
    the locale the one compiled, faketime and disorderfs applied), and what the builds saw:
    the experiment ran as BUILD_USER, AHEAD_DAYS ahead of the real clock, with recipes/ in a
    different order at each listing; the control (when reprotest ran it) as the invoking
    user, by the real clock, recipes/ in one order."""
    plan = re.search(r'build "experiment-1": (.*)', run.log)
    assert plan, run.explained()
    assert all(f"vary {v}" in plan[1] for v in VARIED), plan[1]
    assert all(f"FIX {v}" in plan[1] for v in LEFT_OUT), plan[1]
    for line in (f"LC_ALL = {LOCALE}", f"FAKETIME variation: faketime = +{AHEAD_DAYS}days",
                 "DISORDERFS variation: --shuffle-dirents=yes", "KHIB_TEST_BUILD_USER"):
        assert line in run.log, line
    recipes = sorted(os.listdir(REPO / "recipes"))
    ahead = AHEAD_DAYS * 86400
    experiment = run.seen["experiment-1"]
    assert (experiment.user, experiment.group) == names(pwd.getpwnam(BUILD_USER)), experiment
    assert run.started + ahead - 1 <= experiment.clock <= run.ended + ahead, experiment
    assert all(sorted(listing) == recipes for listing in experiment.listings), experiment
    assert len(set(experiment.listings)) > 1, experiment  # each listing shuffled
    control = run.seen.get("control")
    if control:
        assert (control.user, control.group) == names(pwd.getpwuid(os.getuid())), control
        assert run.started - 1 <= control.clock <= run.ended, control
        assert len(set(control.listings)) == 1, control


def names(user: pwd.struct_passwd) -> tuple[str, str]:
    """A user's name and the name of their group."""
    return user.pw_name, grp.getgrgid(user.pw_gid).gr_name
