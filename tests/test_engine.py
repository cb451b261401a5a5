"""The build engine on small real C packages: what is rebuilt, what is not, and why."""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from khib_build.engine.sysroot import libc_files
from tests.helpers import (
    GREET_C,
    TOOL_C,
    assert_ok,
    khib,
    khib_argv,
    point_release,
    write_graph_sample,
)

pytestmark = pytest.mark.slow


def build(root: Path, *extra: object, verb: str = "rootfs", out: str = "out"
          ) -> dict[str, Any]:
    """Build the sample; the run's JSON summary, with each package's status by name."""
    result = khib(verb, *extra, "-c", root / "graph.yaml", "-o", root / out,
                  "--cache-dir", root / "cache", "--json")
    assert_ok(result)
    summary: dict[str, Any] = json.loads(result.stdout)
    summary["by_name"] = {p["name"]: p["status"] for p in summary["packages"]}
    summary["stderr"] = result.stderr
    return summary


def run_app(root: Path, out: str = "out") -> str:
    """What the image's app prints (it is a static i386 binary: the host runs it)."""
    app = root / out / "staging" / "app" / "usr" / "bin" / "app"
    return subprocess.run([app], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    write_graph_sample(tmp_path)
    first = build(tmp_path)
    assert first["by_name"] == {"libgreet": "built", "app": "built", "tool": "built"}
    assert first["status"] == "packed"
    return tmp_path


def test_nothing_changed_nothing_done(sample: Path) -> None:
    again = build(sample)
    assert set(again["by_name"].values()) == {"up to date"}
    assert again["status"] == "up to date"
    assert "packing" not in again["stderr"]


def test_cache_hit_after_the_output_dir_is_removed(sample: Path) -> None:
    image = (sample / "out" / "rootfs.gz").read_bytes()
    subprocess.run(["rm", "-rf", sample / "out"], check=True)
    again = build(sample)
    assert set(again["by_name"].values()) == {"cached"}
    assert (sample / "out" / "rootfs.gz").read_bytes() == image
    # Another output dir on the same cache builds nothing either, even when the cache has
    # lost the header sets recipes read (gc removes them on their own): status says
    # "cached", and the build agrees.
    subprocess.run(["rm", "-rf", sample / "cache" / "reads"], check=True)
    status = khib("status", "-c", sample / "graph.yaml", "-o", sample / "other",
                  "--cache-dir", sample / "cache", "--json")
    assert {s["status"] for s in json.loads(status.stdout).values()} == {"cached"}
    other = build(sample, out="other")
    assert set(other["by_name"].values()) == {"cached"}


def test_a_change_rebuilds_the_package_and_its_dependents_only(sample: Path) -> None:
    greet = sample / "recipes" / "libgreet" / "src" / "greet.c"
    greet.write_text(greet.read_text().replace("hello from libgreet", "hi from libgreet"))
    again = build(sample)
    assert again["by_name"] == {"libgreet": "built", "app": "built", "tool": "up to date"}
    assert again["status"] == "packed"
    assert run_app(sample) == "hi from libgreet\n"
    tool = sample / "recipes" / "tool" / "src" / "tool.c"
    tool.write_text(tool.read_text().replace('"tool"', '"tool 2"'))
    leaf = build(sample)
    assert leaf["by_name"] == {"libgreet": "up to date", "app": "up to date", "tool": "built"}


def test_same_output_stops_the_rebuild_early(sample: Path) -> None:
    script = sample / "recipes" / "libgreet" / "files" / "build.sh"
    script.write_text(script.read_text().replace("# Builds", "# Compiles and archives"))
    again = build(sample, "--explain")
    # libgreet's inputs changed, its library did not: app keeps its key.
    assert again["by_name"] == {"libgreet": "built", "app": "up to date", "tool": "up to date"}
    assert again["status"] == "up to date"
    why = next(p["why"] for p in again["packages"] if p["name"] == "libgreet")
    assert len(why) == 1 and why[0].startswith("recipe file files/build.sh: ")
    assert "libgreet 1: building because recipe file files/build.sh" in again["stderr"]


def test_a_toolchain_change_is_said_in_one_line(sample: Path) -> None:
    """Whatever every package shares (the C library, the toolchain) changed: one line says
    what and how many packages it rebuilt."""
    config = sample / "graph.yaml"
    config.write_text(config.read_text().replace("ldflags: [-m32]", "ldflags: [-m32, -s]"))
    result = khib("rootfs", "-c", config, "-o", sample / "out", "--cache-dir",
                  sample / "cache")
    assert_ok(result)
    assert "toolchain ldflags: '-m32' -> '-m32 -s': 3 package(s) rebuilt" in result.stderr


def read_by(root: Path, name: str) -> set[str]:
    """The C library headers the cache recorded for a package's newest build."""
    record = max((root / "cache" / "reads" / name).glob("*/read.json"),
                 key=lambda path: path.stat().st_mtime)
    return set(json.loads(record.read_text())["sets"][0])


def test_keys_follow_the_c_library_headers_each_build_read(sample: Path) -> None:
    """A point release of the C library: its packages' versions change, and with them the
    sysroot (a new copy); a header no package read changes too: nothing rebuilds. Then a
    header libgreet and tool read changes (in a way that changes libgreet's code): those
    two rebuild, and app, which links libgreet; explain names the header."""
    recipes = sample / "recipes"
    (recipes / "tool" / "src" / "tool.c").write_text("#include <sys/utsname.h>\n" + TOOL_C)
    (recipes / "libgreet" / "src" / "greet.c").write_text(
        '#include <sys/utsname.h>\n#include "greet.h"\n#ifdef KHIB_POINT_RELEASE\n'
        'const char *greeting(void) { return "hello from a point release"; }\n#else\n'
        + GREET_C.split("\n", 1)[1] + "#endif\n")
    first = build(sample)["by_name"]
    assert first["libgreet"] == first["tool"] == "built", first
    read = {name: read_by(sample, name) for name in ("libgreet", "app", "tool")}
    assert "usr/include/stdio.h" in read["app"] & read["tool"]
    (utsname,) = [h for h in read["libgreet"] & read["tool"] - read["app"]
                  if h.endswith("/sys/utsname.h")]

    env = point_release(sample)
    config = ("-c", sample / "graph.yaml", "-o", sample / "out", "--cache-dir",
              sample / "cache")
    result = khib("rootfs", *config, "--json", env=env)
    assert_ok(result)
    assert {p["status"] for p in json.loads(result.stdout)["packages"]} == {"up to date"}
    old, new = sorted((p for p in (sample / "cache" / "sysroots").iterdir() if p.is_dir()),
                      key=lambda p: p.stat().st_mtime)
    everything = {p.relative_to(new).as_posix() for p in (new / "usr/include").rglob("*.h")}
    unread = sorted(everything - read["libgreet"] - read["app"] - read["tool"])[0]
    with (new / unread).open("a") as header:
        header.write("/* a point release */\n")
    result = khib("rootfs", *config, "--json", env=env)
    assert_ok(result)
    assert {p["status"] for p in json.loads(result.stdout)["packages"]} == {"up to date"}
    assert "C library" not in result.stderr

    with (new / utsname).open("a") as header:
        header.write("#define KHIB_POINT_RELEASE 1\n")
    explained = khib("explain", "tool", *config, env=env)
    assert f"C library header {utsname}: " in explained.stdout, explained.stdout
    result = khib("rootfs", *config, "--explain", env=env)
    assert_ok(result)
    for name, cause in (("libgreet", f"C library header {utsname}: "),
                        ("tool", f"C library header {utsname}: "),
                        ("app", "dependency libgreet output: ")):
        assert re.search(rf"^{name} 1: building because {re.escape(cause)}[^;]*$",
                         result.stderr, re.MULTILINE), result.stderr
    assert f"C library headers changed ({utsname}): 2 package(s) rebuilt" in result.stderr
    assert run_app(sample) == "hello from a point release\n"
    assert old.is_dir()  # the sysroot of the versions before stays for builds that use them


def test_an_undeclared_dependency_fails_to_build(sample: Path) -> None:
    recipe = sample / "recipes" / "app" / "recipe.yaml"
    recipe.write_text(recipe.read_text().replace("depends: ['libgreet']", "depends: []"))
    result = khib("rootfs", "-c", sample / "graph.yaml", "-o", sample / "out2",
                  "--cache-dir", sample / "cache")
    assert result.returncode == 1
    assert "package app: step 'build 1/1' failed" in result.stderr
    assert "greet.h: No such file or directory" in result.stderr


def test_host_headers_and_libraries_stay_out(tmp_path: Path) -> None:
    assert Path("/usr/include/zlib.h").is_file()  # the host has it; the target must not see it
    config = write_graph_sample(tmp_path)
    app = tmp_path / "recipes" / "app" / "src" / "app.c"
    app.write_text("#include <zlib.h>\n" + app.read_text())
    result = khib("rootfs", "-c", config, "-o", tmp_path / "out", "--cache-dir",
                  tmp_path / "cache")
    assert result.returncode == 1
    assert "zlib.h: No such file or directory" in result.stderr
    app.write_text(app.read_text().replace("#include <zlib.h>\n", "") +
                   "int deflateEnd(void *);\nint use(void) { return deflateEnd(0); }\n")
    recipe = tmp_path / "recipes" / "app" / "recipe.yaml"
    recipe.write_text(recipe.read_text().replace("-lgreet", "-lgreet -lz"))
    result = khib("rootfs", "-c", config, "-o", tmp_path / "out", "--cache-dir",
                  tmp_path / "cache")
    assert result.returncode == 1
    assert "cannot find -lz" in result.stderr


def test_explain_status_and_rebuild(sample: Path) -> None:
    common = ("-c", sample / "graph.yaml", "-o", sample / "out", "--cache-dir", sample / "cache")
    greet = sample / "recipes" / "libgreet" / "src" / "greet.c"
    before = khib("status", *common)
    assert_ok(before)
    assert [line.split(None, 2) for line in before.stdout.splitlines()] == [
        ["libgreet", "1", "up to date"], ["tool", "1", "up to date"], ["app", "1", "up to date"]]
    greet.write_text(greet.read_text() + "/* changed */\n")
    status = khib("status", *common, "--json")
    assert_ok(status)
    states = json.loads(status.stdout)
    assert states["libgreet"]["status"] == "stale"
    assert states["app"] == {"status": "stale", "key": None, "waits_on": "libgreet"}
    assert states["tool"]["status"] == "up to date"
    explained = khib("explain", "libgreet", *common)
    assert_ok(explained)
    lines = explained.stdout.splitlines()
    assert lines[0] == "libgreet: stale; changed since its last build in the output dir:"
    assert len(lines) == 2 and lines[1].startswith("  recipe file src/greet.c: ")
    old, new = lines[1].split(": ", 1)[1].split(" -> ")
    assert old != new and len(old) == len(new) == 16
    # rebuild forces a package and its dependents, even when nothing changed.
    greet.write_text(greet.read_text().replace("/* changed */\n", ""))
    forced = build(sample, "libgreet", verb="rebuild")
    assert forced["by_name"] == {"libgreet": "built", "app": "built", "tool": "up to date"}
    assert next(p["why"] for p in forced["packages"] if p["name"] == "app") == [
        "forced (rebuild)"]


def test_graph_as_text_and_dot(tmp_path: Path) -> None:
    config = write_graph_sample(tmp_path)
    text = khib("graph", "-c", config)
    assert_ok(text)
    assert text.stdout == "libgreet 1\ntool 1\napp 1: depends on libgreet\n"
    dot = khib("graph", "-c", config, "--format", "dot")
    assert_ok(dot)
    assert '"app" -> "libgreet";' in dot.stdout
    assert '"image graph" -> "app";' in dot.stdout and '"image graph" -> "tool";' in dot.stdout
    assert '"image graph" -> "libgreet"' not in dot.stdout


JOBS_MK = """all: a b
a b:
\t@echo start $$(date +%s.%N) >> $(TIMES); sleep 1; echo end $$(date +%s.%N) >> $(TIMES)
"""


def most_at_once(times: Path) -> int:
    """The most intervals open at one moment, from 'start T' / 'end T' lines."""
    events = sorted((float(t), 0 if kind == "end" else 1)
                    for kind, t in (line.split() for line in times.read_text().splitlines()))
    running = peak = 0
    for _, starting in events:
        running += 1 if starting else -1
        peak = max(peak, running)
    return peak


@pytest.mark.parametrize("jobs", [1, 2, 4])
def test_one_job_budget_for_packages_and_their_makes(jobs: int, tmp_path: Path) -> None:
    """libgreet and tool build side by side, each running a make of two one-second jobs:
    all of them together never exceed -j, and fill it."""
    (tmp_path / "jobs.mk").write_text(JOBS_MK)
    times = tmp_path / "times"
    config = write_graph_sample(tmp_path, f"make -f {tmp_path / 'jobs.mk'} TIMES={times}")
    assert_ok(khib("rootfs", "-c", config, "-o", tmp_path / "out", "--cache-dir",
                   tmp_path / "cache", "-j", jobs))
    assert most_at_once(times) == min(jobs, 4)


def test_two_runs_on_one_output_dir(tmp_path: Path) -> None:
    config = write_graph_sample(tmp_path, "sleep 2")
    argv = ("rootfs", "-c", config, "-o", tmp_path / "out", "--cache-dir", tmp_path / "cache")
    runs = [subprocess.Popen(khib_argv(*argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    waited = [err for _, err in outputs if "is in use by another khib-build run" in err]
    assert len(waited) == 1 and "waiting for it to finish" in waited[0]
    assert khib("inspect", tmp_path / "out" / "rootfs.gz").stdout.count("usr/bin/") == 2
    # --no-wait fails at once while another run holds the output dir.
    holder = subprocess.Popen(khib_argv("-v", *argv, "--no-cache"), stderr=subprocess.PIPE,
                              text=True)
    assert holder.stderr is not None
    for line in holder.stderr:
        if "building" in line:
            break
    refused = khib(*argv, "--no-wait")
    holder.wait(timeout=300)
    assert refused.returncode == 1
    assert f"output dir {tmp_path / 'out'} is in use by another khib-build run (pid " \
        f"{holder.pid})" in refused.stderr


def remaining(root: Path) -> list[str]:
    return sorted(p.parent.parent.name for p in (root / "cache" / "packages").glob("*/*/tree"))


def test_cache_stats_and_gc_least_recently_used_first(sample: Path) -> None:
    cache = ("--cache-dir", sample / "cache")
    stats = khib("cache", "stats", *cache, "--json")
    assert_ok(stats)
    found = json.loads(stats.stdout)
    assert found["folders"]["packages"]["entries"] == 3
    assert set(found["packages"]) == {"libgreet", "app", "tool"}
    assert found["folders"]["sysroots"]["entries"] == 1  # the C library's
    entries = {p.parent.name: p for p in (sample / "cache" / "packages").glob("*/*")}
    for age, name in enumerate(["tool", "libgreet", "app"]):  # app used longest ago
        os.utime(entries[name] / "meta.json", (1e9 + age, 1e9 - age))
    app_size = found["packages"]["app"]["bytes"]
    assert_ok(khib("cache", "gc", *cache, "--max-size", found["bytes"] - app_size))
    assert remaining(sample) == ["libgreet", "tool"]
    # An entry a running build holds (a shared lock) is never removed.
    held = os.open(entries["tool"], os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(held, fcntl.LOCK_SH)
    try:
        gc = khib("cache", "gc", *cache, "--max-size", 0)
        assert_ok(gc)
        assert "kept tool" in gc.stdout and "held by a running build" in gc.stdout
        assert remaining(sample) == ["tool"]
    finally:
        os.close(held)
    assert_ok(khib("cache", "gc", *cache, "--max-size", "0"))
    assert json.loads(khib("cache", "stats", *cache, "--json").stdout)["entries"] == 0


def test_gc_trims_every_folder_of_the_cache(tmp_path: Path) -> None:
    """Package entries, sysroots, unpacked kernel sources and apt states are counted and
    trimmed together, least recently used first, down to the limit."""
    cache = tmp_path / "cache"
    items = {"sysroots/c0ffee": 2000, "packages/app/k1": 1000, "apt-sources/deb-i386": 500,
             "kernel-src/beef": 3000}
    for age, (item, size) in enumerate(items.items()):  # oldest first
        folder = cache / item
        data = folder / "tree" / "data" if item.startswith("packages") else folder / "data"
        data.parent.mkdir(parents=True)
        data.write_bytes(b"x" * size)
        if item.startswith("packages"):
            (folder / "meta.json").write_text("{}")
            os.utime(folder / "meta.json", (1e9 + age, 1e9 + age))
        os.utime(folder, (1e9 + age, 1e9 + age))
    stats = json.loads(khib("cache", "stats", "--cache-dir", cache, "--json").stdout)
    assert {name: row["entries"] for name, row in stats["folders"].items()} == {
        "packages": 1, "sysroots": 1, "kernel-src": 1, "apt-sources": 1}
    assert stats["bytes"] == 6500 + 2  # and meta.json
    gc = khib("cache", "gc", "--cache-dir", cache, "--max-size", 3600)
    assert_ok(gc)
    assert gc.stdout.splitlines()[:2] == ["removed sysroots c0ffee (2000 bytes)",
                                          "removed app k1 (1002 bytes)"]
    assert [item for item in items if (cache / item).exists()] == [
        "apt-sources/deb-i386", "kernel-src/beef"]


def test_concurrent_runs_on_one_cache_build_each_key_once(tmp_path: Path) -> None:
    """Two rootfs runs started together on an empty cache (two output dirs): every
    package is built by one of them; the other waits for it and takes it from the cache."""
    write_graph_sample(tmp_path, extra_steps="sleep 1")
    runs = [subprocess.Popen(
        khib_argv("rootfs", "-c", tmp_path / "graph.yaml", "-o", tmp_path / f"out{i}",
                  "--cache-dir", tmp_path / "cache", "--json"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (1, 2)]
    outputs = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    statuses = [{p["name"]: p["status"] for p in json.loads(out)["packages"]}
                for out, _ in outputs]
    for name in ("libgreet", "app", "tool"):
        assert sorted(s[name] for s in statuses) == ["built", "cached"], statuses
    assert "another run is building it; waiting for its result" in outputs[0][1] + outputs[1][1]
    assert run_app(tmp_path, "out1") == run_app(tmp_path, "out2") == "hello from libgreet\n"


def test_the_c_library_memo_is_trusted_only_while_it_holds(tmp_path: Path) -> None:
    """libc_files keeps each file's stat data and digest beside the sysroot: a file
    rewritten with its mtime put back is hashed again (its ctime moved), and a memo that
    is malformed (a short entry, not a list, not a mapping, not JSON) is hashed around."""
    base = tmp_path / "abc"
    (base / "usr" / "include").mkdir(parents=True)
    header = base / "usr" / "include" / "a.h"
    header.write_text("int a;\n")
    (base / "usr" / "lib").mkdir()
    (base / "usr" / "lib" / "libc.a").write_bytes(b"!<arch>\n")
    first = libc_files(base)
    memo = tmp_path / ".abc.files.json"
    assert set(json.loads(memo.read_text())) == {"usr/include/a.h", "usr/lib/libc.a"}
    times = header.stat()
    header.write_text("int b;\n")
    os.utime(header, ns=(times.st_atime_ns, times.st_mtime_ns))
    second = libc_files(base)
    assert second.headers["usr/include/a.h"] != first.headers["usr/include/a.h"]
    for broken in ('{"usr/include/a.h": [1, 2, 3, 4]}', '{"usr/include/a.h": 5}', "[]",
                   "not json"):
        memo.write_text(broken)
        assert libc_files(base) == second
