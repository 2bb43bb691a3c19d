"""The stand-in Hub (tests/fakehub.py) driven by the real huggingface_hub functions, no npdistil.

Besides checking the fake, these tests pin down how huggingface_hub 2.4 behaves on each fault:
what npdistil's downloader can rely on, and what it must check itself (the sha256).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import httpx2
import pytest
from fakehub import FakeHub, git_blob_sha1, offline, short_timeouts  # fake_hub: via conftest
from huggingface_hub import (
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    list_repo_files,
    model_info,
    snapshot_download,
)
from huggingface_hub.errors import (
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

REPO = "org/tiny"
CONFIG = b'{"dim": 8, "n_layers": 1}'
WEIGHTS = bytes(range(256)) * 40  # 10,240 bytes, stored in LFS as *.safetensors
FILES = {"config.json": CONFIG, "model.safetensors": WEIGHTS, "tok/vocab.txt": b"[PAD]\n[CLS]\n"}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def storage(tmp_path: Path, repo_id: str = REPO) -> Path:
    return tmp_path / "hf" / "hub" / ("models--" + repo_id.replace("/", "--"))


def leftovers(tmp_path: Path, repo_id: str = REPO) -> list[str]:
    """Files in the cache's blobs/ folder (partial downloads end in .incomplete)."""
    blobs = storage(tmp_path, repo_id) / "blobs"
    return sorted(p.name for p in blobs.iterdir()) if blobs.exists() else []


def resolve(file: str, rev: str = "main", repo_id: str = REPO) -> str:
    return f"/{repo_id}/resolve/{rev}/{file}"


def test_small_file_lands_in_the_tmp_cache(fake_hub: FakeHub, tmp_path: Path) -> None:
    commit = fake_hub.add_repo(REPO, FILES)
    path = Path(hf_hub_download(REPO, "config.json"))
    assert path.read_bytes() == CONFIG
    assert path == storage(tmp_path) / "snapshots" / commit / "config.json"
    assert path.resolve().name == git_blob_sha1(CONFIG)  # blobs/<etag>, here the git sha1
    assert (storage(tmp_path) / "refs" / "main").read_text() == commit
    assert fake_hub.requests == [("HEAD", resolve("config.json")), ("GET", resolve("config.json"))]


def test_lfs_file_blob_is_named_by_its_sha256(fake_hub: FakeHub, tmp_path: Path) -> None:
    fake_hub.add_repo(REPO, FILES)
    meta = get_hf_file_metadata(hf_hub_url(REPO, "model.safetensors"))
    assert (meta.etag, meta.size) == (sha256(WEIGHTS), len(WEIGHTS))
    path = Path(hf_hub_download(REPO, "model.safetensors"))
    assert path.read_bytes() == WEIGHTS
    assert path.resolve() == storage(tmp_path) / "blobs" / sha256(WEIGHTS)
    assert hf_hub_download(REPO, "tok/vocab.txt").endswith("tok/vocab.txt")


def test_second_download_sends_only_a_head(fake_hub: FakeHub) -> None:
    commit = fake_hub.add_repo(REPO, FILES)
    first = hf_hub_download(REPO, "model.safetensors")
    fake_hub.reset_requests()
    assert hf_hub_download(REPO, "model.safetensors") == first
    # Observed with 2.4: a branch name is re-resolved with a HEAD on every call, even when cached.
    assert fake_hub.requests == [("HEAD", resolve("model.safetensors"))]
    fake_hub.reset_requests()
    assert hf_hub_download(REPO, "model.safetensors", revision=commit) == first
    assert fake_hub.requests == []  # a cached commit hash needs no request at all


def test_snapshot_download_with_allow_patterns(fake_hub: FakeHub, tmp_path: Path) -> None:
    commit = fake_hub.add_repo(REPO, FILES)
    folder = Path(snapshot_download(REPO, allow_patterns=["*.json", "tok/*"]))
    assert folder == storage(tmp_path) / "snapshots" / commit
    got = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert got == ["config.json", "tok/vocab.txt"]
    first = fake_hub.requests
    fake_hub.reset_requests()
    assert snapshot_download(REPO, allow_patterns=["*.json", "tok/*"]) == str(folder)
    assert fake_hub.requests == [("GET", f"/api/models/{REPO}/revision/main")]  # tree: disk cache
    assert sorted(first) == sorted(
        [
            ("GET", f"/api/models/{REPO}/revision/main"),
            ("GET", f"/api/models/{REPO}/tree/{commit}?recursive=true&expand=false"),
            ("HEAD", resolve("config.json", commit)),
            ("GET", resolve("config.json", commit)),
            ("HEAD", resolve("tok/vocab.txt", commit)),
            ("GET", resolve("tok/vocab.txt", commit)),
        ]
    )


def test_tree_pagination_and_api_functions(fake_hub: FakeHub) -> None:
    commit = fake_hub.add_repo(REPO, FILES)
    fake_hub.tree_page_size = 2  # 4 entries (3 files, directory tok/) -> 2 pages
    assert sorted(list_repo_files(REPO)) == sorted(FILES)
    cursors = [p for m, p in fake_hub.requests if "/tree/" in p]
    assert cursors == [
        f"/api/models/{REPO}/tree/main?recursive=true&expand=false",
        f"/api/models/{REPO}/tree/main?recursive=true&expand=false&cursor=2",
    ]
    info = model_info(REPO, files_metadata=True)
    assert info.id == REPO and info.sha == commit
    lfs = {s.rfilename: s.lfs and s.lfs.sha256 for s in info.siblings or []}
    assert lfs == {"config.json": None, "model.safetensors": sha256(WEIGHTS), "tok/vocab.txt": None}


def test_revision_by_branch_name_and_by_commit_hash(fake_hub: FakeHub, tmp_path: Path) -> None:
    old = fake_hub.add_repo(REPO, {"config.json": b"old"})
    new = fake_hub.add_repo(REPO, {"config.json": b"new"})
    dev = fake_hub.add_repo(REPO, {"config.json": b"dev"}, revision="dev")
    assert len({old, new, dev}) == 3
    assert Path(hf_hub_download(REPO, "config.json")).read_bytes() == b"new"
    assert Path(hf_hub_download(REPO, "config.json", revision="dev")).read_bytes() == b"dev"
    assert Path(hf_hub_download(REPO, "config.json", revision=old)).read_bytes() == b"old"
    assert (storage(tmp_path) / "refs" / "dev").read_text() == dev
    folder = snapshot_download(REPO, revision=old)
    assert Path(folder).name == old


def test_legacy_id_and_canonical_id(fake_hub: FakeHub, tmp_path: Path) -> None:
    canonical, legacy = "distilbert/distilbert-base-cased", "distilbert-base-cased"
    fake_hub.add_repo(canonical, FILES)
    fake_hub.alias(legacy, canonical)
    a = Path(hf_hub_download(legacy, "config.json"))
    b = Path(hf_hub_download(canonical, "config.json"))
    assert a.read_bytes() == b.read_bytes() == CONFIG
    # The cache is keyed by the id asked for: two folders, the file downloaded twice.
    assert a.is_relative_to(storage(tmp_path, legacy))
    assert b.is_relative_to(storage(tmp_path, canonical))
    assert fake_hub.requests[:3] == [
        ("HEAD", resolve("config.json", repo_id=legacy)),  # -> 307 to the canonical id
        ("HEAD", resolve("config.json", repo_id=canonical)),
        ("GET", resolve("config.json", repo_id=canonical)),
    ]
    folder = Path(snapshot_download(legacy, allow_patterns=["*.json"]))
    assert folder.parent.parent == storage(tmp_path, legacy)
    assert model_info(legacy).id == canonical


def test_offline_with_cache_makes_no_request(fake_hub: FakeHub, monkeypatch) -> None:
    fake_hub.add_repo(REPO, FILES)
    path = hf_hub_download(REPO, "config.json")
    folder = snapshot_download(REPO)
    fake_hub.reset_requests()
    offline(monkeypatch)
    assert hf_hub_download(REPO, "config.json") == path
    assert snapshot_download(REPO) == folder
    assert fake_hub.requests == []


def test_offline_without_cache_raises_local_entry_not_found(fake_hub: FakeHub, monkeypatch) -> None:
    fake_hub.add_repo(REPO, FILES)
    offline(monkeypatch)
    with pytest.raises(LocalEntryNotFoundError, match="check your connection") as err:
        hf_hub_download(REPO, "config.json")  # the message blames the connection, the cause not
    assert isinstance(err.value.__cause__, OfflineModeIsEnabled)
    with pytest.raises(LocalEntryNotFoundError, match="HF_HUB_OFFLINE=0"):
        snapshot_download(REPO)
    assert fake_hub.requests == []


def test_not_found_errors(fake_hub: FakeHub, tmp_path: Path) -> None:
    commit = fake_hub.add_repo(REPO, FILES)
    with pytest.raises(RepositoryNotFoundError, match="Repository Not Found for url"):
        hf_hub_download("org/missing", "config.json")
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("org/missing")
    with pytest.raises(RevisionNotFoundError, match="Invalid rev id: nope"):
        hf_hub_download(REPO, "config.json", revision="nope")
    with pytest.raises(RevisionNotFoundError):
        snapshot_download(REPO, revision="nope")
    with pytest.raises(RemoteEntryNotFoundError, match="missing.json not found"):
        hf_hub_download(REPO, "missing.json")
    # huggingface_hub remembers the absence, keyed by the commit the 404 named
    assert (storage(tmp_path) / ".no_exist" / commit / "missing.json").exists()


def test_500_on_head_without_cache_retries_then_local_entry_not_found(fake_hub: FakeHub) -> None:
    fake_hub.add_repo(REPO, FILES)
    fake_hub.fail("config.json", 500)
    start = time.perf_counter()
    with pytest.raises(LocalEntryNotFoundError, match="check your connection") as err:
        hf_hub_download(REPO, "config.json")
    took = time.perf_counter() - start
    assert isinstance(err.value.__cause__, HfHubHTTPError)
    assert err.value.__cause__.response.status_code == 500
    # one HEAD without retry, then the no-cache path retries 5 times with backoff
    assert fake_hub.requests == [("HEAD", resolve("config.json"))] * 7
    assert fake_hub.retry_sleeps == [1, 2, 4, 8, 8]  # 23 s unpatched
    print(f"500 on HEAD: {len(fake_hub.requests)} HEADs in {took:.2f} s")


def test_500_on_head_with_cache_falls_back_to_the_cache(fake_hub: FakeHub) -> None:
    fake_hub.add_repo(REPO, FILES)
    path = hf_hub_download(REPO, "config.json")
    fake_hub.fail("config.json", 500)
    fake_hub.reset_requests()
    assert hf_hub_download(REPO, "config.json") == path
    assert fake_hub.requests == [("HEAD", resolve("config.json"))]
    assert fake_hub.retry_sleeps == []


def test_500_once_on_head_recovers(fake_hub: FakeHub) -> None:
    fake_hub.add_repo(REPO, FILES)
    fake_hub.fail("config.json", 503, times=1)
    assert Path(hf_hub_download(REPO, "config.json")).read_bytes() == CONFIG
    assert [m for m, _ in fake_hub.requests] == ["HEAD", "HEAD", "GET"]
    assert fake_hub.retry_sleeps == []  # the retry after a no-retry HEAD starts without a sleep


def test_500_on_get_is_raised_at_once(fake_hub: FakeHub, tmp_path: Path) -> None:
    fake_hub.add_repo(REPO, FILES)
    fake_hub.fail("model.safetensors", 500, method="GET")
    with pytest.raises(HfHubHTTPError, match="500") as err:
        hf_hub_download(REPO, "model.safetensors")
    assert type(err.value) is HfHubHTTPError
    assert [m for m, _ in fake_hub.requests] == ["HEAD", "GET"]  # GET retries only 408 and 429
    assert leftovers(tmp_path) == []


def test_unreachable_endpoint(fake_hub: FakeHub, tmp_path: Path) -> None:
    fake_hub.add_repo(REPO, FILES)
    cached = hf_hub_download(REPO, "config.json")
    fake_hub.stop()
    start = time.perf_counter()
    assert hf_hub_download(REPO, "config.json") == cached  # one failed connect, then the cache
    with pytest.raises(LocalEntryNotFoundError, match="check your connection") as err:
        hf_hub_download(REPO, "model.safetensors")
    took = time.perf_counter() - start
    assert isinstance(err.value.__cause__, httpx2.ConnectError)
    assert fake_hub.retry_sleeps == [1, 2, 4, 8, 8]
    print(f"unreachable: {took:.2f} s")


def test_dropped_connection_restarts_a_small_file(fake_hub: FakeHub, tmp_path: Path) -> None:
    fake_hub.add_repo(REPO, FILES)
    fake_hub.drop_after("model.safetensors", 1000, times=1)
    path = Path(hf_hub_download(REPO, "model.safetensors"))
    assert path.read_bytes() == WEIGHTS
    # http_get reads the body in 10 MB chunks (constants.DOWNLOAD_CHUNK_SIZE): the 1000 bytes of
    # an unfinished chunk are dropped with the connection, so the retry starts again from 0.
    ranges = [r.headers.get("range") for r in fake_hub.request_log if r.method == "GET"]
    assert ranges == [None, None]
    assert fake_hub.retry_sleeps == [1]
    assert leftovers(tmp_path) == [sha256(WEIGHTS)]


def test_dropped_connection_resumes_after_whole_chunks(fake_hub: FakeHub, monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 1024)
    fake_hub.add_repo(REPO, FILES)
    fake_hub.drop_after("model.safetensors", 3000, times=1)
    assert Path(hf_hub_download(REPO, "model.safetensors")).read_bytes() == WEIGHTS
    ranges = [r.headers.get("range") for r in fake_hub.request_log if r.method == "GET"]
    assert ranges == [None, "bytes=2048-"]  # two whole 1 KiB chunks were kept


def test_connection_dropped_every_time_gives_up(fake_hub: FakeHub, tmp_path: Path) -> None:
    fake_hub.add_repo(REPO, FILES)
    fake_hub.drop_after("model.safetensors", 1000)  # less than a chunk: never any progress
    with pytest.raises(httpx2.RemoteProtocolError, match="received 1000 bytes, expected 10240"):
        hf_hub_download(REPO, "model.safetensors")
    assert [m for m, _ in fake_hub.requests] == ["HEAD"] + ["GET"] * 6
    assert fake_hub.retry_sleeps == [1] * 5
    assert leftovers(tmp_path) == []  # the partial temporary file is deleted


def test_progress_resets_the_resume_budget(fake_hub: FakeHub, monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 1024)
    fake_hub.add_repo(REPO, FILES)
    fake_hub.drop_after("model.safetensors", 1024)  # every GET: one more chunk, then hang up
    assert Path(hf_hub_download(REPO, "model.safetensors")).read_bytes() == WEIGHTS
    ranges = [r.headers.get("range") for r in fake_hub.request_log if r.method == "GET"]
    assert ranges == [None] + [f"bytes={1024 * i}-" for i in range(1, 10)]


def test_corrupt_file_of_the_same_size_goes_unnoticed(fake_hub: FakeHub, tmp_path: Path) -> None:
    fake_hub.add_repo(REPO, FILES)
    fake_hub.corrupt("model.safetensors")  # one byte flipped, same length
    path = Path(hf_hub_download(REPO, "model.safetensors"))
    data = path.read_bytes()
    assert len(data) == len(WEIGHTS) and data != WEIGHTS
    assert path.resolve().name == sha256(WEIGHTS) != sha256(data)  # named by a hash it lacks


def test_corrupt_file_of_another_size_fails_the_size_check(fake_hub: FakeHub, tmp_path) -> None:
    fake_hub.add_repo(REPO, FILES)
    fake_hub.corrupt("model.safetensors", WEIGHTS[:-1])
    with pytest.raises(OSError, match="Consistency check failed: file should be of size 10240"):
        hf_hub_download(REPO, "model.safetensors")
    assert leftovers(tmp_path) == []


def test_slow_server_times_out(fake_hub: FakeHub, monkeypatch) -> None:
    fake_hub.add_repo(REPO, FILES)
    short_timeouts(monkeypatch, 0.15)
    fake_hub.slow("config.json", 0.5, method="GET")
    with pytest.raises(httpx2.ReadTimeout):  # raw httpx2, not an OSError
        hf_hub_download(REPO, "config.json")
    assert [m for m, _ in fake_hub.requests].count("GET") == 6  # 5 resumes, as for a drop


def test_stop_closes_the_port_and_the_threads() -> None:
    hub = FakeHub().start()
    url = hub.url
    with httpx2.Client() as client:  # a keep-alive connection left open on purpose
        response = client.get(url + "/org/none/resolve/main/x")
        assert response.headers["X-Error-Code"] == "RepoNotFound"
        hub.stop()
        hub.stop()
        with pytest.raises(httpx2.ConnectError):
            httpx2.get(url + "/")
    assert hub._thread is None
