"""A shared build cache over plain HTTP: GET to read, PUT to write.

Any server that stores what is PUT works (a WebDAV server, an object store front end).
Under the base URL, ``<name>/<key>.tar.gz`` holds a package's tree and ``<name>/<key>.json``
its metadata with the artifact's size and sha256; the JSON goes up last, so a reader
never finds the metadata of an artifact still on its way;
``<name>/<recipe key>.reads.json`` holds the C library header sets builds of a recipe key
read, which give its keys.  A download is checked twice, the artifact against its sha256
and the unpacked tree against its digest, before it becomes a local cache entry.

Every failure (refused, timed out, an HTTP error, a corrupt artifact) is reported once and
turns the remote cache off for the rest of the run, so a run pays for at most one
failure, bounded by the timeouts, and builds the rest locally.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import tempfile
import threading
import time
from pathlib import Path

from khib_build import cancel
from khib_build.engine.cache import Cache, header_sets
from khib_build.errors import KhibError
from khib_build.fsutil import CHUNK, sha256_of, walk
from khib_build.report import say
from khib_build.sources.extract import SLACK, ExtractError, refused_nodes, unpack
from khib_build.sources.fetch import end_read

CONNECT_TIMEOUT = 3.0


class RemoteFailure(KhibError):
    pass


class RemoteCache:
    def __init__(self, url: str, cache: Cache, writable: bool,
                 timeout: float) -> None:
        self.base = url.rstrip("/")
        self.cache = cache
        self.writable = writable
        self.timeout = timeout
        self.off = False
        self.lock = threading.Lock()

    def url(self, name: str, key: str, suffix: str) -> str:
        return f"{self.base}/{name}/{key}{suffix}"

    def turn_off(self, name: str, what: str, exc: BaseException) -> None:
        with self.lock:
            if not self.off:
                self.off = True
                say(f"remote cache {self.base}: {what} {name} failed ({exc}); building "
                    "locally, without the remote cache for the rest of this run")

    def download(self, name: str, key: str) -> bool:
        """Fetch an entry into the local cache; False on a miss or a failure."""
        if self.off:
            return False
        import requests  # only when the shared cache is used

        try:
            answer = requests.get(self.url(name, key, ".json"),
                                  timeout=(CONNECT_TIMEOUT, self.timeout))
            if answer.status_code == 404:
                return False
            answer.raise_for_status()
            meta = answer.json()
            with self.cache.adopting(name, key) as entry:
                artifact = entry / "artifact.tar.gz"
                self.get_file(self.url(name, key, ".tar.gz"), artifact, meta)
                unpack(artifact, entry / "tree", refused_nodes,
                       limit=int(meta["tree_bytes"]) + SLACK)
                artifact.unlink()
                for field in ("artifact_sha256", "artifact_bytes", "tree_bytes"):
                    meta.pop(field)
                (entry / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        except (requests.RequestException, RemoteFailure, ExtractError, OSError, ValueError,
                KeyError, TypeError) as exc:
            cancel.check()  # (a read ended by an interrupt is not the remote's fault)
            self.turn_off(name, "fetching", exc)
            return False
        say(f"{name}: fetched from the remote cache")
        return True

    def download_reads(self, name: str, recipe_key: str) -> list[list[str]]:
        """The header sets the shared cache knows for a recipe key (none on a miss or a
        failure)."""
        if self.off:
            return []
        import requests

        try:
            answer = requests.get(self.url(name, recipe_key, ".reads.json"),
                                  timeout=(CONNECT_TIMEOUT, self.timeout))
            if answer.status_code == 404:
                return []
            answer.raise_for_status()
            return header_sets(answer.json())
        except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
            cancel.check()
            self.turn_off(name, "fetching the headers read by", exc)
            return []

    def upload_reads(self, name: str, recipe_key: str, sets: list[list[str]]) -> None:
        """Publish the header sets of a recipe key, unless read-only or off."""
        if self.off or not self.writable:
            return
        import requests

        try:
            self.put(self.url(name, recipe_key, ".reads.json"),
                     json.dumps({"sets": sets}).encode())
        except requests.RequestException as exc:
            self.turn_off(name, "storing the headers read by", exc)

    def get_file(self, url: str, dest: Path, meta: dict[str, object]) -> None:
        """Download ``url`` into ``dest`` within a total deadline; check its sha256."""
        import requests

        digest = hashlib.sha256()
        deadline = time.monotonic() + 10 * self.timeout
        with requests.get(url, stream=True, timeout=(CONNECT_TIMEOUT, self.timeout),
                          headers={"Accept-Encoding": "identity"}) as answer, \
                cancel.ended_by_stop(lambda: end_read(answer)), dest.open("wb") as out:
            answer.raise_for_status()
            for block in answer.iter_content(CHUNK):
                cancel.check()
                if time.monotonic() > deadline:
                    raise RemoteFailure(f"still downloading after {10 * self.timeout:g} s")
                digest.update(block)
                out.write(block)
        if digest.hexdigest() != meta["artifact_sha256"]:
            raise RemoteFailure("the artifact does not match its sha256")

    def upload(self, name: str, key: str) -> None:
        """Publish a local entry, unless read-only or off."""
        if self.off or not self.writable:
            return
        import requests

        entry = self.cache.entry(name, key)
        try:
            meta = json.loads((entry / "meta.json").read_text())
            with tempfile.TemporaryDirectory(dir=entry.parent, prefix=".tmp-") as temporary:
                artifact = Path(temporary) / "artifact.tar.gz"
                meta["tree_bytes"] = pack(entry / "tree", artifact)
                meta["artifact_bytes"] = artifact.stat().st_size
                meta["artifact_sha256"] = sha256_of(artifact)
                with artifact.open("rb") as body:
                    self.put(self.url(name, key, ".tar.gz"), body)
            self.put(self.url(name, key, ".json"), json.dumps(meta, sort_keys=True).encode())
        except (requests.RequestException, OSError, ValueError) as exc:
            self.turn_off(name, "storing", exc)

    def put(self, url: str, body: object) -> None:
        import requests

        answer = requests.put(url, data=body, timeout=(CONNECT_TIMEOUT, self.timeout))
        answer.raise_for_status()


def pack(tree: Path, artifact: Path) -> int:
    """Write ``tree`` as a tar.gz (owners zeroed); the bytes its files hold."""
    total = 0
    with tarfile.open(artifact, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for rel, path, st in walk(tree):
            info = tar.gettarinfo(str(path), arcname=rel)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isreg():
                total += st.st_size
                with path.open("rb") as data:
                    tar.addfile(info, data)
            else:
                tar.addfile(info)
    return total
