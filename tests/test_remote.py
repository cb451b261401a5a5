"""The shared build cache (Bazel's HTTP cache layout: ac/ and cas/) against a real nginx
(WebDAV PUT) and tests/httpserver.py on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from khib_build.engine.action_result import (
    Digest,
    OutputFile,
    decode_action_result,
    encode_action_result,
)
from khib_build.engine.cache import Cache
from khib_build.engine.remote import RemoteCache
from khib_build.fsutil import tree_digest
from tests.helpers import assert_ok, khib, write_graph_sample
from tests.httpserver import Fault, serving
from tests.nginx import PASSWORD, USER, free_port, nginx

BLOB = 3 << 20  # tool's tree holds this many random bytes: above nginx's default body limit
HANG = 5.0  # --remote-timeout against a server that never answers


def sample(root: Path) -> Path:
    config = write_graph_sample(root)
    recipe = root / "recipes" / "tool" / "recipe.yaml"
    recipe.write_text(recipe.read_text() + f"  - head -c {BLOB} /dev/urandom > "
                      "{{ destdir }}/usr/bin/blob\n")
    return config


def build(config: Path, root: Path, out: str, cache: str, *remote: object,
          timeout: float = 1) -> tuple[dict[str, Any], str, float]:
    """Run rootfs; each package's summary by name, standard error and the seconds taken."""
    started = time.monotonic()
    result = khib("rootfs", "-c", config, "-o", root / out, "--cache-dir", root / cache,
                  "--json", "--remote-timeout", timeout, *remote)
    assert_ok(result)
    summary = json.loads(result.stdout)
    return ({p["name"]: p for p in summary["packages"]}, result.stderr,
            time.monotonic() - started)


def statuses(packages: dict[str, Any]) -> dict[str, str]:
    return {name: p["status"] for name, p in packages.items()}


def said(stderr: str) -> list[str]:
    """The remote cache's lines."""
    return [line for line in stderr.splitlines() if line.startswith("remote cache")]


def entries(root: Path) -> dict[str, dict[str, str]]:
    """Each ActionResult a server stores, by its package (or ``reads <recipe key>``): its
    own URL path and its blobs' (``/ac/<key>``, ``tree.tar.gz``: ``/cas/<sha256>``, ...),
    after checking that every blob it names is stored under its sha256 with its size."""
    found = {}
    for action in sorted((root / "ac").iterdir()):
        paths = {"ac": f"/ac/{action.name}"}
        for file in decode_action_result(action.read_bytes()):
            blob = (root / "cas" / file.digest.hash).read_bytes()
            assert hashlib.sha256(blob).hexdigest() == file.digest.hash
            assert len(blob) == file.digest.size_bytes
            paths[file.path] = f"/cas/{file.digest.hash}"
        if "meta.json" in paths:
            meta = json.loads((root / paths["meta.json"][1:]).read_bytes())
            assert meta["key"] == action.name
            found[meta["name"]] = paths
        else:
            assert set(paths) == {"ac", "reads.json"}
            found[f"reads {action.name}"] = paths
    return found


@pytest.mark.slow
def test_upload_from_one_cache_download_into_an_empty_one(tmp_path: Path) -> None:
    config = sample(tmp_path)
    with nginx(tmp_path / "nginx") as server:
        first, _, _ = build(config, tmp_path, "a", "cache-a", "--remote-cache", server.url)
        assert set(statuses(first).values()) == {"built"}
        assert sorted(p.name for p in server.root.iterdir()) == ["ac", "cas"]
        stored = entries(server.root)
        assert sorted(name for name in stored if not name.startswith("reads ")) == [
            "app", "libgreet", "tool"]
        assert len(stored) == 6  # and the header sets of each recipe key
        assert {name: stored[name]["ac"] for name in first} == {
            name: f"/ac/{p['key']}" for name, p in first.items()}
        assert (server.root / stored["tool"]["tree.tar.gz"][1:]).stat().st_size > BLOB
        # Each ActionResult went up after the blobs it names.
        log = server.requests()
        assert all(status in (200, 201, 204, 404) for _, _, status in log)
        for paths in stored.values():
            order = {path: i for i, (method, path, _) in enumerate(log) if method == "PUT"}
            assert all(order[blob] < order[paths["ac"]] for name, blob in paths.items()
                       if name != "ac" and blob in order)
        second, stderr, _ = build(config, tmp_path, "b", "cache-b", "--remote-cache",
                                  server.url, "--remote-cache-read-only")
        assert set(statuses(second).values()) == {"remote"}
        assert "building" not in stderr
    image = [(tmp_path / out / "rootfs.gz").read_bytes() for out in "ab"]
    assert image[0] == image[1]


def test_blobs_go_up_before_their_entry_and_a_blob_the_server_has_goes_up_once(
        tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "usr" / "bin").mkdir(parents=True)
    (tree / "usr" / "bin" / "hello").write_bytes(b"#!/bin/sh\necho hello\n" * 100)
    (tree / "usr" / "bin" / "hi").symlink_to("hello")
    key = hashlib.sha256(b"hello 1").hexdigest()
    local = Cache(tmp_path / "cache")
    local.store("hello", key, tree, {"name": "hello", "version": "1", "key": key})
    with nginx(tmp_path / "nginx") as server:
        remote = RemoteCache(server.url, local, writable=True, timeout=5)
        remote.upload("hello", key)
        stored = entries(server.root)["hello"]
        tree_blob, meta_blob = stored["tree.tar.gz"], stored["meta.json"]
        remote.upload("hello", key)
        assert server.requests() == [
            ("HEAD", tree_blob, 404), ("PUT", tree_blob, 201),
            ("HEAD", meta_blob, 404), ("PUT", meta_blob, 201), ("PUT", f"/ac/{key}", 201),
            ("HEAD", tree_blob, 200), ("HEAD", meta_blob, 200), ("PUT", f"/ac/{key}", 204)]
        other = Cache(tmp_path / "other")
        assert RemoteCache(server.url, other, writable=False, timeout=5).download("hello", key)
        assert not RemoteCache(server.url, other, writable=False, timeout=5).download(
            "hello", hashlib.sha256(b"hello 2").hexdigest())  # a miss, said nowhere
    assert tree_digest(other.entry("hello", key) / "tree") == tree_digest(tree)
    assert other.meta("hello", key) == local.meta("hello", key)


def test_writes_log_in_with_the_user_and_password_in_the_url_which_is_never_shown(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """nginx's location of docs/ci.md: anyone reads, writers log in."""
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "motd").write_text("hello\n")
    key = hashlib.sha256(b"motd 1").hexdigest()
    local = Cache(tmp_path / "cache")
    local.store("motd", key, tree, {"name": "motd", "version": "1", "key": key})
    with nginx(tmp_path / "nginx") as server:
        port = server.url.rpartition(":")[2]
        writer = RemoteCache(f"http://{USER}:{PASSWORD}@127.0.0.1:{port}/private", local,
                             writable=True, timeout=5)
        writer.upload("motd", key)
        assert not writer.off
        reader = RemoteCache(f"{server.url}/private", Cache(tmp_path / "other"),
                             writable=False, timeout=5)
        assert reader.download("motd", key)
        assert capsys.readouterr().err == "motd: fetched from the remote cache\n"
        wrong = RemoteCache(f"http://{USER}:wrong-{PASSWORD}@127.0.0.1:{port}/private", local,
                            writable=True, timeout=5)
        (server.root / "private" / "ac" / key).unlink()
        wrong.upload("motd", key)
        assert wrong.off and not (server.root / "private" / "ac" / key).exists()
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"remote cache http://{USER}@127.0.0.1:{port}/private: storing "
                           "motd failed (401 Client Error: Unauthorized"), line
    assert PASSWORD not in line


@pytest.mark.slow
def test_read_only_never_uploads(tmp_path: Path) -> None:
    config = sample(tmp_path)
    with nginx(tmp_path / "nginx") as server:
        build(config, tmp_path, "a", "cache", "--remote-cache", server.url,
              "--remote-cache-read-only")
        assert list(server.root.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["down", "500", "stall"])
def test_a_failing_remote_falls_back_to_building(fault: str, tmp_path: Path) -> None:
    config = sample(tmp_path)
    _, _, local = build(config, tmp_path, "local", "cache-local")
    with nginx(tmp_path / "nginx") as server, serving() as stalling:
        build(config, tmp_path, "a", "cache-a", "--remote-cache", server.url)
        url = server.url
        if fault == "down":
            url = f"http://127.0.0.1:{free_port()}"
        elif fault == "500":
            url = f"{server.url}/broken"
        else:  # answers a few bytes, then nothing
            stalling.default = Fault("stall", b"x" * 1000)
            url = stalling.url
        packages, stderr, seconds = build(config, tmp_path, "b", "cache-b", "--remote-cache",
                                          url)
    assert set(statuses(packages).values()) == {"built"}
    lines = said(stderr)
    assert len(lines) == 1, stderr
    assert lines[0].endswith("building locally, without the remote cache for the rest of "
                             "this run")
    # One failure costs at most the timeouts (1 s here; 10 s for a whole blob).
    assert seconds < local + 15


@pytest.mark.slow
@pytest.mark.parametrize("fault, why", [
    ("corrupt", "(tree.tar.gz) does not match its digest"),
    ("swapped-blob", "(tree.tar.gz) does not match its digest"),
    ("swapped-entry", "its entry is app's under the key"),
    ("malformed-entry", "is not an ActionResult: the message ends inside a field"),
    ("huge-blob", "is 2147483648 bytes, more than the 1073741824 this cache takes"),
    ("bomb", "refused as a decompression bomb (more than its metadata says, or than a "
             "tree's archive holds)"),
])
def test_a_blob_that_fails_its_digest_is_refused_and_the_package_built(
        fault: str, why: str, tmp_path: Path) -> None:
    config = sample(tmp_path)
    local, _, _ = build(config, tmp_path, "local", "cache-local")
    with nginx(tmp_path / "nginx") as server:
        build(config, tmp_path, "a", "cache-a", "--remote-cache", server.url)
        stored = entries(server.root)
        files = {"/" + p.relative_to(server.root).as_posix(): p.read_bytes()
                 for p in server.root.rglob("*") if p.is_file()}
    libgreet, app = stored["libgreet"], stored["app"]
    with serving() as remote:
        remote.routes.update(files)
        if fault == "corrupt":  # one byte flipped
            data = bytearray(files[libgreet["tree.tar.gz"]])
            data[len(data) // 2] ^= 1
            remote.routes[libgreet["tree.tar.gz"]] = bytes(data)
        elif fault == "swapped-blob":  # another package's tree under libgreet's digest
            remote.routes[libgreet["tree.tar.gz"]] = files[app["tree.tar.gz"]]
        elif fault == "swapped-entry":  # another package's entry under libgreet's key
            remote.routes[libgreet["ac"]] = files[app["ac"]]
        elif fault == "malformed-entry":  # cut short
            remote.routes[libgreet["ac"]] = files[libgreet["ac"]][:-3]
        elif fault == "huge-blob":  # an entry that claims a tree of 2 GiB
            claimed = [OutputFile(f.path, Digest(f.digest.hash, 2 << 30)
                                  if f.path == "tree.tar.gz" else f.digest)
                       for f in decode_action_result(files[libgreet["ac"]])]
            remote.routes[libgreet["ac"]] = encode_action_result(claimed)
        else:  # a consistent entry whose meta.json claims a terabyte: 64 MiB of zeros
            remote.routes.update(bomb_entry(libgreet, files))
        packages, stderr, _ = build(config, tmp_path, "b", "cache-b", "--remote-cache",
                                    remote.url, "--remote-cache-read-only")
    lines = said(stderr)
    assert len(lines) == 1, stderr
    assert ": fetching libgreet failed (" in lines[0] and why in lines[0]
    # libgreet was built here: the tree that goes into the image is the one built locally.
    assert packages["libgreet"]["status"] == packages["app"]["status"] == "built"
    assert packages["libgreet"]["output_sha256"] == local["libgreet"]["output_sha256"]
    assert packages["app"]["output_sha256"] == local["app"]["output_sha256"]


def bomb_entry(paths: dict[str, str], files: dict[str, bytes]) -> dict[str, bytes]:
    """Routes that serve, under a package's key, a tree archive of 64 MiB of zeros (64 KiB
    compressed) with its true digests and a meta.json that says it unpacks to 1 TB."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as archive:
        info = tarfile.TarInfo("zeros")
        info.size = 64 << 20
        archive.addfile(info, io.BytesIO(bytes(info.size)))
    meta = json.loads(files[paths["meta.json"]]) | {"tree_bytes": 10 ** 12}
    blobs = {"tree.tar.gz": raw.getvalue(), "meta.json": json.dumps(meta).encode()}
    digests = {path: Digest(hashlib.sha256(blob).hexdigest(), len(blob))
               for path, blob in blobs.items()}
    routes = {f"/cas/{digests[path].hash}": blob for path, blob in blobs.items()}
    routes[paths["ac"]] = encode_action_result([OutputFile(path, digest)
                                                for path, digest in digests.items()])
    return routes


@pytest.mark.slow
def test_a_server_that_never_answers_costs_one_timeout_per_run(tmp_path: Path) -> None:
    config = sample(tmp_path)
    _, _, local = build(config, tmp_path, "local", "cache-local", "-j", 2)
    with serving() as silent:
        silent.default = Fault("hang")
        packages, stderr, seconds = build(config, tmp_path, "b", "cache-b", "-j", 2,
                                          "--remote-cache", silent.url, timeout=HANG)
        asked = silent.paths()
    assert set(statuses(packages).values()) == {"built"}
    lines = said(stderr)
    assert len(lines) == 1 and "timed out" in lines[0], stderr
    # libgreet and tool ask at once (-j 2); then the remote cache is off for app and for
    # every upload: one timeout per run (one per package would be three, and six with the
    # uploads).
    assert 1 <= len(asked) <= 2
    print(f"a server that never answers: {seconds:.1f} s, {seconds - local:.1f} s more than "
          f"a local build ({local:.1f} s), with --remote-timeout {HANG:g}")
    assert HANG <= seconds < local + HANG + 4
