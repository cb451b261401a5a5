"""The shared build cache against a real nginx (WebDAV PUT) on 127.0.0.1."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import assert_ok, khib, write_graph_sample
from tests.httpserver import Fault, serving
from tests.nginx import free_port, nginx

pytestmark = pytest.mark.slow
BLOB = 3 << 20  # tool's tree holds this many random bytes: above nginx's default body limit


def sample(root: Path) -> Path:
    config = write_graph_sample(root)
    recipe = root / "recipes" / "tool" / "recipe.yaml"
    recipe.write_text(recipe.read_text() + f"  - head -c {BLOB} /dev/urandom > "
                      "{{ destdir }}/usr/bin/blob\n")
    return config


def build(config: Path, root: Path, out: str, cache: str, *remote: object
          ) -> tuple[dict[str, Any], str, float]:
    started = time.monotonic()
    result = khib("rootfs", "-c", config, "-o", root / out, "--cache-dir", root / cache,
                  "--json", "--remote-timeout", 1, *remote)
    assert_ok(result)
    summary = json.loads(result.stdout)
    return ({p["name"]: p["status"] for p in summary["packages"]}, result.stderr,
            time.monotonic() - started)


def test_upload_from_one_cache_download_into_an_empty_one(tmp_path: Path) -> None:
    config = sample(tmp_path)
    with nginx(tmp_path / "nginx") as server:
        first, _, _ = build(config, tmp_path, "a", "cache-a", "--remote-cache", server.url)
        assert set(first.values()) == {"built"}
        artifacts = sorted(server.root.glob("*/*.tar.gz"))
        assert [a.parent.name for a in artifacts] == ["app", "libgreet", "tool"]
        assert max(a.stat().st_size for a in artifacts) > BLOB
        second, stderr, _ = build(config, tmp_path, "b", "cache-b", "--remote-cache",
                                  server.url, "--remote-cache-read-only")
        assert set(second.values()) == {"remote"}
        assert "building" not in stderr
    image = [(tmp_path / out / "rootfs.gz").read_bytes() for out in "ab"]
    assert image[0] == image[1]


def test_read_only_never_uploads(tmp_path: Path) -> None:
    config = sample(tmp_path)
    with nginx(tmp_path / "nginx") as server:
        build(config, tmp_path, "a", "cache", "--remote-cache", server.url,
              "--remote-cache-read-only")
        assert list(server.root.iterdir()) == []


@pytest.mark.parametrize("fault", ["down", "500", "corrupt", "stall"])
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
        elif fault == "corrupt":
            artifact = next(server.root.glob("libgreet/*.tar.gz"))
            data = bytearray(artifact.read_bytes())
            data[len(data) // 2] ^= 1
            artifact.write_bytes(bytes(data))
        else:  # answers a few bytes, then nothing
            for path in server.root.glob("*/*"):
                stalling.routes["/" + path.relative_to(server.root).as_posix()] = \
                    Fault("stall", path.read_bytes())
            url = stalling.url
        statuses, stderr, seconds = build(config, tmp_path, "b", "cache-b", "--remote-cache",
                                          url)
    # (With a corrupt libgreet, tool may have come down intact meanwhile.)
    assert statuses["libgreet"] == statuses["app"] == "built"
    assert statuses["tool"] in ({"built", "remote"} if fault == "corrupt" else {"built"})
    said = [line for line in stderr.splitlines() if line.startswith("remote cache")]
    assert len(said) == 1, stderr
    assert said[0].endswith("building locally, without the remote cache for the rest of "
                            "this run")
    if fault == "corrupt":
        assert "the artifact does not match its sha256" in said[0]
    # One failure costs at most the timeouts (1 s here; 10 s for a whole artifact).
    assert seconds < local + 15
