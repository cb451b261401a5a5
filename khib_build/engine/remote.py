"""A shared build cache in the layout of Bazel's HTTP remote cache: GET, HEAD and PUT on
``<base>/cas/<sha256>`` and ``<base>/ac/<key>``.

``cas/<sha256>`` holds a blob named by the SHA-256 of its bytes. ``ac/<package key>`` holds
an ActionResult (REAPI v2, :mod:`khib_build.engine.action_result`) whose output files name
two blobs: ``tree.tar.gz``, the package's tree, and ``meta.json``, its metadata (package,
key, inputs, the tree's digest and size).  ``ac/<recipe key>`` names ``reads.json``, the C
library header sets that builds of that recipe key read, which give its package keys.  So
bazel-remote (whose default checks an ActionResult and its blobs), a Bazel cache in front
of an object store, or nginx with WebDAV PUT can be the server.

Blobs go up first, each skipped when HEAD finds it there, the ActionResult last: a reader
never finds an entry whose blobs are still on their way.  Everything fetched is checked
before use: a blob against its digest (sha256 and size), a meta against the package and
key asked for, the unpacked tree against its digest before it becomes a local entry.  An
entry whose blob the server no longer has is a miss.

Every failure (refused, timed out, an HTTP error, a blob that fails its digest) is reported
once and turns the remote cache off for the rest of the run, so a run pays for at most one
failure, bounded by the timeouts, and builds the rest locally.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

from khib_build import cancel
from khib_build.engine.action_result import (
    Digest,
    OutputFile,
    ProtobufError,
    decode_action_result,
    encode_action_result,
)
from khib_build.engine.cache import Cache, header_sets
from khib_build.errors import KhibError
from khib_build.fsutil import CHUNK, sha256_of, walk
from khib_build.report import say
from khib_build.sources.extract import SLACK, ExtractError, refused_nodes, unpack
from khib_build.sources.fetch import end_read

CONNECT_TIMEOUT = 3.0
TREE, META, READS = "tree.tar.gz", "meta.json", "reads.json"  # an entry's output files
ACTION_LIMIT = 1 << 16  # bytes of an ActionResult, at most
RECORD_LIMIT = 1 << 24  # bytes of a meta.json or reads.json, at most
TREE_LIMIT = 1 << 30  # bytes of a package's tree archive, at most, whatever the server says
EXPANSION = 20  # its files add up to this many times its size, at most (gzip of a tree)
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class RemoteFailure(KhibError):
    pass


class Gone(Exception):
    """The server no longer has a blob that its entry names: a miss."""


class RemoteCache:
    def __init__(self, url: str, cache: Cache, writable: bool,
                 timeout: float) -> None:
        self.base = url.rstrip("/")
        self.shown = without_password(self.base)
        self.cache = cache
        self.writable = writable
        self.timeout = timeout
        self.off = False
        self.lock = threading.Lock()

    def turn_off(self, name: str, what: str, exc: BaseException) -> None:
        with self.lock:
            if not self.off:
                self.off = True
                why = str(exc).replace(self.base, self.shown)  # (an HTTP error's URL)
                say(f"remote cache {self.shown}: {what} {name} failed ({why}); building "
                    "locally, without the remote cache for the rest of this run")

    def download(self, name: str, key: str) -> bool:
        """Fetch an entry into the local cache; False on a miss or a failure."""
        if self.off:
            return False
        import requests  # only when the shared cache is used

        try:
            files = self.get_action(key)
            if files is None:
                return False
            meta = self.get_record(files, META)
            if (meta.get("name"), meta.get("key")) != (name, key):
                raise RemoteFailure(f"its entry is {meta.get('name')}'s under the key "
                                    f"{str(meta.get('key'))[:12]}")
            with self.cache.adopting(name, key) as entry:
                archive = entry / TREE
                with archive.open("wb") as out:
                    self.get_blob(files, TREE, out, TREE_LIMIT)
                limit = min(int(meta.pop("tree_bytes")),
                            EXPANSION * archive.stat().st_size) + SLACK
                unpack(archive, entry / "tree", refused_nodes, limit,
                       "more than its metadata says, or than a tree's archive holds")
                archive.unlink()
                (entry / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        except Gone:
            return False
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
            files = self.get_action(recipe_key)
            if files is None:
                return []
            record = self.get_record(files, READS)
            if (record.get("name"), record.get("recipe_key")) != (name, recipe_key):
                raise RemoteFailure(f"its header sets are {record.get('name')}'s")
            return header_sets(record)
        except Gone:
            return []
        except (requests.RequestException, RemoteFailure, ValueError, KeyError,
                TypeError) as exc:
            cancel.check()
            self.turn_off(name, "fetching the headers read by", exc)
            return []

    def upload(self, name: str, key: str) -> None:
        """Publish a local entry, unless read-only or off."""
        if self.off or not self.writable:
            return
        import requests

        entry = self.cache.entry(name, key)
        try:
            meta = json.loads((entry / "meta.json").read_text())
            with tempfile.TemporaryDirectory(dir=entry.parent, prefix=".tmp-") as temporary:
                archive = Path(temporary) / TREE
                meta["tree_bytes"] = pack(entry / "tree", archive)
                files = [self.put_blob(TREE, archive),
                         self.put_blob(META, json.dumps(meta, sort_keys=True).encode())]
            self.put_action(key, files)
        except (requests.RequestException, OSError, ValueError) as exc:
            self.turn_off(name, "storing", exc)

    def upload_reads(self, name: str, recipe_key: str, sets: list[list[str]]) -> None:
        """Publish the header sets of a recipe key, unless read-only or off."""
        if self.off or not self.writable:
            return
        import requests

        record = {"name": name, "recipe_key": recipe_key, "sets": sets}
        try:
            self.put_action(recipe_key,
                            [self.put_blob(READS, json.dumps(record, sort_keys=True).encode())])
        except requests.RequestException as exc:
            self.turn_off(name, "storing the headers read by", exc)

    def url(self, kind: str, name: str) -> str:
        return f"{self.base}/{kind}/{name}"

    def get(self, url: str, out: IO[bytes], limit: int) -> Digest | None:
        """Write what ``url`` holds into ``out`` within a total deadline, reading no more
        than ``limit`` + 1 bytes; the digest of what was read, or None if the server has
        nothing there."""
        import requests

        digest = hashlib.sha256()
        size = 0
        deadline = time.monotonic() + 10 * self.timeout
        with requests.get(url, stream=True, timeout=(CONNECT_TIMEOUT, self.timeout),
                          headers={"Accept-Encoding": "identity"}) as answer, \
                cancel.ended_by_stop(lambda: end_read(answer)):
            if answer.status_code == 404:
                return None
            answer.raise_for_status()
            for block in answer.iter_content(CHUNK):
                cancel.check()
                if time.monotonic() > deadline:
                    raise RemoteFailure(f"still downloading after {10 * self.timeout:g} s")
                block = block[:limit + 1 - size]
                digest.update(block)
                out.write(block)
                size += len(block)
                if size > limit:
                    break
        return Digest(digest.hexdigest(), size)

    def get_action(self, key: str) -> dict[str, Digest] | None:
        """The output files of the ActionResult under ``key``; None on a miss."""
        body = io.BytesIO()
        got = self.get(self.url("ac", key), body, ACTION_LIMIT)
        if got is None:
            return None
        if got.size_bytes > ACTION_LIMIT:
            raise RemoteFailure(f"ac/{key[:12]} holds more than {ACTION_LIMIT} bytes")
        try:
            files = decode_action_result(body.getvalue())
        except ProtobufError as exc:
            raise RemoteFailure(f"ac/{key[:12]} is not an ActionResult: {exc}") from None
        return {file.path: file.digest for file in files}

    def get_blob(self, files: dict[str, Digest], path: str, out: IO[bytes],
                 limit: int) -> None:
        """Fetch the blob of output file ``path`` (``limit`` bytes at most) into ``out``,
        checked against its digest."""
        digest = files.get(path)
        if digest is None:
            raise RemoteFailure(f"the entry has no {path}")
        if not SHA256_HEX.fullmatch(digest.hash) or digest.size_bytes < 0:
            raise RemoteFailure(f"the entry's {path} has an invalid digest {digest}")
        if digest.size_bytes > limit:
            raise RemoteFailure(f"the entry's {path} is {digest.size_bytes} bytes, more "
                                f"than the {limit} this cache takes")
        got = self.get(self.url("cas", digest.hash), out, digest.size_bytes)
        if got is None:
            raise Gone(path)
        if got != digest:
            raise RemoteFailure(f"cas/{digest.hash[:12]} ({path}) does not match its digest: "
                                f"sha256 {got.hash[:12]} over the {got.size_bytes} bytes "
                                f"read, {digest.size_bytes} expected")

    def get_record(self, files: dict[str, Digest], path: str) -> dict[str, Any]:
        """The JSON object of output file ``path``."""
        body = io.BytesIO()
        self.get_blob(files, path, body, RECORD_LIMIT)
        record = json.loads(body.getvalue())
        if not isinstance(record, dict):
            raise RemoteFailure(f"{path} is not a JSON object")
        return record

    def put_blob(self, path: str, body: bytes | Path) -> OutputFile:
        """Store a blob unless the server has it already; the output file naming it."""
        import requests

        if isinstance(body, Path):
            digest = Digest(sha256_of(body), body.stat().st_size)
        else:
            digest = Digest(hashlib.sha256(body).hexdigest(), len(body))
        url = self.url("cas", digest.hash)
        answer = requests.head(url, timeout=(CONNECT_TIMEOUT, self.timeout))
        if answer.status_code != 404:
            answer.raise_for_status()
        if answer.status_code != 200 or \
                answer.headers.get("Content-Length") not in (None, str(digest.size_bytes)):
            if isinstance(body, Path):
                with body.open("rb") as data:
                    self.put(url, data)
            else:
                self.put(url, body)
        return OutputFile(path, digest)

    def put_action(self, key: str, files: list[OutputFile]) -> None:
        self.put(self.url("ac", key), encode_action_result(files))

    def put(self, url: str, body: bytes | IO[bytes]) -> None:
        import requests

        answer = requests.put(url, data=body, timeout=(CONNECT_TIMEOUT, self.timeout),
                              headers={"Content-Type": "application/octet-stream"})
        answer.raise_for_status()


def without_password(url: str) -> str:
    """``url`` with the password of its user (``https://ci:secret@host/``) left out."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user.partition(':')[0]}@{host}"))


def pack(tree: Path, archive: Path) -> int:
    """Write ``tree`` as a tar.gz (owners zeroed, no time or name in the gzip header, so
    that a tree packs into the same blob every time); the bytes its files hold."""
    total = 0
    with archive.open("wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as packed, \
            tarfile.open(fileobj=packed, mode="w", format=tarfile.PAX_FORMAT) as tar:
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
