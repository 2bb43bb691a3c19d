"""A stand-in Hugging Face Hub on 127.0.0.1 (stdlib HTTP/1.1 server) for tests without network.

Enough of the Hub protocol for huggingface_hub 2.4's `hf_hub_download`, `snapshot_download`,
`get_hf_file_metadata`, `model_info`, `list_repo_files`; never any `X-Xet-*` header:
- `HEAD|GET /{repo}/resolve/{rev}/{path}`: 200 (206 for `Range`), `X-Repo-Commit`, `ETag` = git
  blob sha1; LFS files: `ETag` = `X-Linked-Etag` = sha256, `X-Linked-Size`. (The Hub answers LFS
  files with a 302 to a CDN carrying these headers; huggingface_hub reads the same fields, so here
  the GET goes to `/resolve/` too.) 404s carry `X-Error-Code: RepoNotFound | RevisionNotFound |
  EntryNotFound` and `X-Error-Message`.
- `GET /api/models/{repo}[/revision/{rev}]` and `/api/models/{repo}/tree/{rev}[/{dir}]`, paginated
  like the Hub (`Link: <...&cursor=N>; rel="next"`, `tree_page_size` entries a page).
- `alias(old, new)`: a renamed repo answers a relative 307 to the new id, as the Hub does.

The `fake_hub` fixture starts one and calls `patch_hf`. huggingface_hub reads its environment at
import into `huggingface_hub.constants`, and some modules copy from there at import, so a test
that runs after import must patch these attributes (the env vars are set too, for subprocesses):
- endpoint: `constants.ENDPOINT`, `constants.HUGGINGFACE_CO_URL_TEMPLATE` (`hf_hub_url` formats
  it and never reads ENDPOINT), `hf_api.api.endpoint` (the HfApi behind `huggingface_hub.model_info`
  and the other module-level API functions; `snapshot_download` makes its own HfApi per call).
- cache: `constants.HF_HOME`, `HF_HUB_CACHE`, `HF_ASSETS_CACHE`, `HF_XET_CACHE` and the copies in
  `utils._cache_manager` (`scan_cache_dir`) and `utils._cache_assets`.
- token: `HF_TOKEN`/`HUGGING_FACE_HUB_TOKEN` unset, `constants.HF_TOKEN_PATH` and
  `HF_STORED_TOKENS_PATH` under tmp: a developer's own token is never read nor sent.
- offline: `constants.HF_HUB_OFFLINE = False`; `is_offline_mode()` returns that constant at call
  time (the env var is not re-read), so `offline(monkeypatch)` switches it on mid-test.
- telemetry: `constants.HF_HUB_DISABLE_TELEMETRY = True`, else the first request of the process is
  `GET {ENDPOINT}/api/agent-harnesses` (agent detection for the user-agent; also moved under tmp).
- retries: huggingface_hub sleeps 1, 2, 4, 8, 8 s between retries (`utils._http` backoff: 23 s for
  a 500 or an unreachable host when nothing is cached) and 1 s before each resume of a broken
  download (`file_download.http_get`). Retry counts are default arguments; both sleeps go through
  their module's `time`, replaced by a proxy that logs the delay in `hub.retry_sleeps` and waits
  10 ms. Timeouts stay as shipped (HEAD 10 s, GET 10 s, the HEAD retried without cache 60 s, the
  API calls none): `short_timeouts` lowers the first three. They are read at call time, except
  `get_hf_file_metadata`'s default, captured at import (`hf_hub_download` passes its own).
Teardown closes huggingface_hub's shared httpx client (`close_session`) and stops the server.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

JSON = {"Content-Type": "application/json"}


def git_blob_sha1(data: bytes) -> str:
    """The id git gives a file's content: the Hub's ETag for a file not in LFS."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class _File:
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def pointer(self) -> bytes:  # what git stores for an LFS file
        return b"version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n" % (
            self.sha256.encode(),
            len(self.data),
        )

    @property
    def oid(self) -> str:
        return git_blob_sha1(self.pointer if self.lfs else self.data)

    def lfs_info(self, sha_key: str) -> dict:
        return {sha_key: self.sha256, "size": len(self.data), "pointerSize": len(self.pointer)}

    def sibling(self) -> dict:  # as /api/models/{repo}?blobs=true lists it
        lfs = self.lfs_info("sha256") if self.lfs else None
        return {"size": len(self.data), "blobId": self.oid, "lfs": lfs}


@dataclass
class _Repo:
    id: str
    commits: dict[str, dict[str, _File]] = field(default_factory=dict)  # commit -> whole tree
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit


@dataclass
class _Fault:
    kind: str  # fail | drop | corrupt | slow
    path: str  # a file path in a repo, or a URL path starting with "/"
    arg: Any
    repo: str | None
    method: str | None
    times: int | None  # requests it still hits; None: all


class Request(NamedTuple):
    method: str
    path: str  # as sent: percent-encoded, with the query string
    headers: dict[str, str]  # names in lower case


class FakeHub:
    """Repos, faults and a request log behind an HTTP server; `start()` it, `stop()` it."""

    def __init__(self) -> None:
        self.tree_page_size = 1000  # the Hub's page size for /tree without expand
        self.retry_sleeps: list[float] = []  # delays huggingface_hub asked for (see patch_hf)
        self._repos: dict[str, _Repo] = {}
        self._aliases: dict[str, str] = {}
        self._faults: list[_Fault] = []
        self._log: list[Request] = []
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeHub:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.hub = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.01,))
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut the keep-alive connections still open; idempotent."""
        if self._server is None or self._thread is None:
            return
        self._server.shutdown()
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        self._thread.join()
        self._server = self._thread = None

    @property
    def url(self) -> str:
        assert self._server is not None, "FakeHub is not running"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        revision: str = "main",
        commit: str | None = None,
        lfs: Iterable[str] = ("*.safetensors", "*.bin"),
    ) -> str:
        """Commit `files` (the whole tree) to branch or tag `revision`; returns the commit hash."""
        pats = tuple(lfs)
        tree = {p: _File(d, any(fnmatch.fnmatch(p, x) for x in pats)) for p, d in files.items()}
        with self._lock:
            repo = self._repos.setdefault(repo_id, _Repo(repo_id))
            if commit is None:
                seed = repr((repo_id, revision, len(repo.commits), sorted(files.items())))
                commit = hashlib.sha1(seed.encode()).hexdigest()
            assert re.fullmatch("[0-9a-f]{40}", commit), f"not a commit hash: {commit!r}"
            repo.commits[commit] = tree
            repo.refs[revision] = commit
        return commit

    def alias(self, old_id: str, new_id: str) -> None:
        """Serve `old_id` as a renamed repo: a 307 to the same URL with `new_id`."""
        self._aliases[old_id] = new_id

    @property
    def request_log(self) -> list[Request]:
        with self._lock:
            return list(self._log)

    @property
    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of each request received, path as sent (percent-encoded, with query)."""
        return [(r.method, r.path) for r in self.request_log]

    def reset_requests(self) -> None:
        with self._lock:
            self._log.clear()

    # Faults. `path` is a file path in any repo (or in `repo`), or a URL path starting with "/".
    # `times`: how many matching requests it hits (None: all of them).
    def fail(self, path: str, status: int = 500, *, times: int | None = None,
             repo: str | None = None, method: str | None = None) -> None:  # fmt: skip
        """Answer `status` (with an X-Error-Message) instead of the content."""
        self._add(_Fault("fail", path, status, repo, method, times))

    def drop_after(self, path: str, nbytes: int, *, times: int | None = None,
                   repo: str | None = None) -> None:  # fmt: skip
        """GET sends the full headers, `nbytes` of the body, then closes the connection."""
        self._add(_Fault("drop", path, nbytes, repo, "GET", times))

    def corrupt(self, path: str, data: bytes | None = None, *, times: int | None = None,
                repo: str | None = None) -> None:  # fmt: skip
        """GET sends `data` (default: one byte flipped); HEAD keeps the true etag and size."""
        self._add(_Fault("corrupt", path, data, repo, "GET", times))

    def slow(self, path: str, seconds: float, *, times: int | None = None,
             repo: str | None = None, method: str | None = None) -> None:  # fmt: skip
        """Wait `seconds` before answering."""
        self._add(_Fault("slow", path, seconds, repo, method, times))

    def _add(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take(self, kind: str, h: _Handler, repo: str, file: str | None) -> _Fault | None:
        """The first fault of `kind` this request triggers, one use consumed."""
        canon = self._aliases.get
        with self._lock:
            for f in self._faults:
                if f.kind != kind or f.times == 0 or f.method not in (None, h.command):
                    continue
                same_repo = f.repo is None or canon(f.repo, f.repo) == canon(repo, repo)
                if f.path == unquote(urlsplit(h.path).path) or (f.path == file and same_repo):
                    f.times = None if f.times is None else f.times - 1
                    return f
        return None

    def _split(self, segs: list[str], verbs: tuple[str, ...]) -> tuple[str, str, list[str]] | None:
        """`[org,] name, verb, *rest` -> (repo_id, verb, rest), preferring a known repo id."""
        hits = [(k, "/".join(segs[:k])) for k in (1, 2) if len(segs) > k and segs[k] in verbs]
        hits.sort(key=lambda hit: hit[1] not in self._repos and hit[1] not in self._aliases)
        return (hits[0][1], segs[hits[0][0]], segs[hits[0][0] + 1 :]) if hits else None

    def _route(self, h: _Handler) -> None:
        url = urlsplit(h.path)
        segs = [unquote(s) for s in url.path.split("/")[1:]]
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        api = segs[:2] == ["api", "models"]
        if api and len(segs) in (3, 4):  # /api/models/{repo}: model_info without a revision
            segs += ["revision", "main"]
        verbs = ("revision", "tree") if api else ("resolve",)
        hit = self._split(segs[2:] if api else segs, verbs)
        if hit is None:
            return h.reply(404, b"Not Found", {"Content-Type": "text/plain"})
        repo_id, verb, rest = hit
        file = "/".join(rest[1:]) if verb == "resolve" else None
        if slow := self._take("slow", h, repo_id, file):
            time.sleep(slow.arg)
        if fail := self._take("fail", h, repo_id, file):
            return h.error(fail.arg, "", f"injected HTTP {fail.arg}")
        if repo_id in self._aliases:
            prefix = "/api/models/" if api else "/"
            new = prefix + self._aliases[repo_id] + h.path[len(prefix) + len(repo_id) :]
            return h.reply(307, b"", {"Location": new})
        if (repo := self._repos.get(repo_id)) is None:
            return h.error(404, "RepoNotFound", "Repository not found")
        rev = rest[0] if rest else "main"
        if (commit := rev if rev in repo.commits else repo.refs.get(rev)) is None:
            return h.error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        tree = repo.commits[commit]
        if verb == "resolve":
            return self._resolve(h, repo_id, commit, tree, file or "")
        if verb == "revision":
            blobs = query.get("blobs") == "true"
            siblings = [{"rfilename": p, **(f.sibling() if blobs else {})} for p, f in tree.items()]
            info = {"id": repo.id, "modelId": repo.id, "sha": commit, "siblings": siblings}
            return h.reply(200, json.dumps(info | {"private": False}).encode(), JSON)
        base = "/".join(rest[1:])
        entries = _tree(tree, base, recursive=query.get("recursive") == "true")
        if base and not entries:
            return h.error(404, "EntryNotFound", f"{base} does not exist on {rev}")
        start = int(query.get("cursor", 0))
        stop = start + self.tree_page_size
        page_headers = dict(JSON)
        if stop < len(entries):
            query["cursor"] = str(stop)
            nxt = f"{self.url}{url.path}?" + "&".join(f"{k}={v}" for k, v in query.items())
            page_headers["Link"] = f'<{nxt}>; rel="next"'
        h.reply(200, json.dumps(entries[start:stop]).encode(), page_headers)

    def _resolve(self, h: _Handler, repo: str, commit: str, tree: dict, file: str) -> None:
        if (f := tree.get(file)) is None:
            return h.error(404, "EntryNotFound", f"{file} not found", {"X-Repo-Commit": commit})
        headers = {"X-Repo-Commit": commit, "ETag": f'"{f.oid}"', "Accept-Ranges": "bytes"}
        if f.lfs:
            sha = f'"{f.sha256}"'
            headers |= {"ETag": sha, "X-Linked-Etag": sha, "X-Linked-Size": str(len(f.data))}
        body = f.data
        if bad := self._take("corrupt", h, repo, file):
            body = _flip_middle_byte(body) if bad.arg is None else bad.arg
        status, body, content_range = _byte_range(h.headers.get("Range"), body)
        if content_range:
            headers["Content-Range"] = content_range
        drop = self._take("drop", h, repo, file)
        h.reply(status, body, headers, send_only=None if drop is None else drop.arg)


def _tree(tree: dict[str, _File], base: str, *, recursive: bool) -> list[dict]:
    """The files and directories under `base`, as entries of the Hub's /tree listing."""
    prefix = f"{base}/" if base else ""
    entries: dict[str, dict] = {}
    for path, f in sorted(tree.items()):
        parts = path[len(prefix) :].split("/") if path.startswith(prefix) else []
        for depth in range(1, len(parts) if recursive else min(2, len(parts))):
            d = prefix + "/".join(parts[:depth])
            entries[d] = {"type": "directory", "oid": git_blob_sha1(d.encode()), "path": d}
        if len(parts) == 1 or (parts and recursive):
            entries[path] = {"type": "file", "oid": f.oid, "size": len(f.data), "path": path}
            if f.lfs:
                entries[path]["lfs"] = f.lfs_info("oid")
    return [e | {"size": e.get("size", 0)} for e in entries.values()]


def _flip_middle_byte(data: bytes) -> bytes:
    i = len(data) // 2
    return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :] if data else b"\0"


def _byte_range(header: str | None, body: bytes) -> tuple[int, bytes, str | None]:
    """(status, body, Content-Range) for one `Range: bytes=a-b` (a or b may be left out)."""
    m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header or "")
    if not m or m.groups() == ("", ""):
        return 200, body, None
    size = len(body)
    start = int(m[1]) if m[1] else size - int(m[2])
    end = min(int(m[2]) + 1, size) if m[1] and m[2] else size
    if not 0 <= start < size:
        return 416, b"", f"bytes */{size}"
    return 206, body[start:end], f"bytes {start}-{end - 1}/{size}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as huggingface_hub's pooled httpx client uses
    server: Any

    def setup(self) -> None:
        super().setup()
        self.hub: FakeHub = self.server.hub
        with self.hub._lock:
            self.hub._conns.add(self.connection)

    def finish(self) -> None:
        with self.hub._lock:
            self.hub._conns.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:
        with self.hub._lock:
            headers = {k.lower(): v for k, v in self.headers.items()}
            self.hub._log.append(Request(self.command, self.path, headers))
        try:
            self.hub._route(self)
        except OSError:  # the client went away (its timeout, or stop()): no one to answer
            self.close_connection = True

    do_HEAD = do_GET

    def reply(self, status: int, body: bytes, headers: dict, send_only: int | None = None) -> None:
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body[:send_only])
        if send_only is not None:  # hang up before the end of the advertised body
            self.wfile.flush()
            self.close_connection = True

    def error(self, status: int, code: str, message: str, extra: dict | None = None) -> None:
        headers = {**JSON, "X-Error-Message": message, **(extra or {})}
        if code:
            headers["X-Error-Code"] = code
        self.reply(status, json.dumps({"error": message}).encode(), headers)

    def log_message(self, format: str, *args: object) -> None:  # keep pytest's output clean
        pass


@dataclass
class _RecordingTime:
    """`time` as huggingface_hub's retry loops see it: records each wanted sleep, waits 10 ms."""

    sleeps: list[float]

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        time.sleep(min(seconds, 0.01))

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def patch_hf(
    monkeypatch: pytest.MonkeyPatch, endpoint: str, hf_home: Path, sleeps: list | None = None
) -> None:
    """Point huggingface_hub at `endpoint` and a cache in `hf_home`; online, no token, fast."""
    from huggingface_hub import constants, file_download, hf_api
    from huggingface_hub.utils import _cache_assets, _cache_manager, _http

    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    hub_cache = hf_home / "hub"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))
    template = endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(hf_api.api, "endpoint", endpoint)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # Else the first request of the process is GET /api/agent-harnesses (user-agent detection).
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    for name, sub in [("HF_HOME", ""), ("HF_HUB_CACHE", "hub"), ("HF_ASSETS_CACHE", "assets"),
                      ("HF_XET_CACHE", "xet"), ("HF_TOKEN_PATH", "token"),
                      ("HF_STORED_TOKENS_PATH", "stored_tokens"),
                      ("AGENT_HARNESSES_PATH", ".agent_harnesses.json")]:  # fmt: skip
        monkeypatch.setattr(constants, name, str(hf_home / sub))
    monkeypatch.setattr(_cache_manager, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(_cache_assets, "HF_ASSETS_CACHE", str(hf_home / "assets"))
    fast_time = _RecordingTime([] if sleeps is None else sleeps)
    monkeypatch.setattr(_http, "time", fast_time)
    monkeypatch.setattr(file_download, "time", fast_time)


def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Switch huggingface_hub to offline mode, as HF_HUB_OFFLINE=1 at import would."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def short_timeouts(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Cap the HEAD, HEAD-retry and GET timeouts of `hf_hub_download` (API calls have none)."""
    from huggingface_hub import constants, file_download

    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", seconds)
    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", seconds)
    monkeypatch.setattr(file_download, "_ETAG_RETRY_TIMEOUT", seconds)


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A running FakeHub, with huggingface_hub pointed at it and at a cache in tmp_path/"hf"."""
    from huggingface_hub import close_session

    hub = FakeHub().start()
    patch_hf(monkeypatch, hub.url, tmp_path / "hf", hub.retry_sleeps)
    try:
        yield hub
    finally:
        close_session()  # huggingface_hub's shared httpx client pools connections to this server
        hub.stop()
