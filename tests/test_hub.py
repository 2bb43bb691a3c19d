"""Loading from the Hub, for real, through huggingface_hub against a stand-in Hub on 127.0.0.1."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES
from fakehub import offline

import npdistil
from npdistil.errors import HubError

REPO = "distilbert/distilbert-base-cased"


def _files(folder: str = "tiny", skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in (FIXTURES / folder).iterdir() if f.name not in skip}


def _st_only(folder: str = "tiny") -> dict[str, bytes]:
    return _files(folder, skip=("pytorch_model.bin",))


def _reference() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ref = np.load(FIXTURES / "tiny_reference.npz")
    return ref["tiny/input_ids"], ref["tiny/attention_mask"], ref["tiny/last_hidden_state"]


def _check_numbers(model: npdistil.DistilBert) -> None:
    ids, mask, expected = _reference()
    err = np.abs(model(ids, mask).last_hidden_state - expected).max()
    assert err <= 1e-4


def _cache_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_first_load_downloads_only_needed_files_converts_and_caches(fake_hub, tmp_path):
    files = _st_only() | {"README.md": b"# a model card", "flax_model.msgpack": b"x" * 1000}
    commit = fake_hub.add_repo(REPO, files)
    model = npdistil.load(REPO)
    _check_numbers(model)
    fetched = {p.rsplit("/", 1)[-1] for m, p in fake_hub.requests if m == "GET"}
    assert fetched == {"config.json", "model.safetensors", "tokenizer.json"}
    assert model.source["repo"] == REPO and model.source["commit"] == commit
    assert (
        model.source["sha256"]
        == __import__("hashlib").sha256(files["model.safetensors"]).hexdigest()
    )
    assert model.path.name == f"{commit}.safetensors"


def test_second_load_makes_no_request(fake_hub):
    fake_hub.add_repo(REPO, _st_only())
    first = npdistil.load(REPO)
    fake_hub.reset_requests()
    second = npdistil.load(REPO)
    assert fake_hub.requests == []
    assert second.path == first.path
    _check_numbers(second)


def test_offline_with_complete_cache_works_without_requests(fake_hub, monkeypatch):
    fake_hub.add_repo(REPO, _st_only())
    npdistil.load(REPO)
    fake_hub.reset_requests()
    offline(monkeypatch)
    _check_numbers(npdistil.load(REPO))
    assert fake_hub.requests == []


def test_offline_with_downloads_but_no_converted_file_converts_from_hf_cache(
    fake_hub, monkeypatch, tmp_path
):
    fake_hub.add_repo(REPO, _st_only())
    npdistil.load(REPO)
    offline(monkeypatch)
    fake_hub.reset_requests()
    fresh = tmp_path / "other-npdistil-cache"
    _check_numbers(npdistil.load(REPO, cache_dir=fresh))
    assert fake_hub.requests == []


def test_offline_with_nothing_cached_is_a_clear_error(fake_hub, monkeypatch):
    fake_hub.add_repo(REPO, _st_only())
    offline(monkeypatch)
    with pytest.raises(HubError, match="not in the local cache"):
        npdistil.load(REPO)
    assert fake_hub.requests == []


@pytest.mark.parametrize("repo_id", ["distilbert-base-cased", "distilbert/distilbert-base-cased"])
def test_both_ids_of_distilbert_base_cased(fake_hub, repo_id):
    fake_hub.add_repo(REPO, _st_only())
    fake_hub.alias("distilbert-base-cased", REPO)
    _check_numbers(npdistil.load(repo_id))


def test_revision_by_branch_and_commit(fake_hub):
    main = fake_hub.add_repo(REPO, _st_only("tiny"))
    other = fake_hub.add_repo(REPO, _st_only("tiny-sinusoidal"), revision="v2")
    assert npdistil.load(REPO).source["commit"] == main
    assert npdistil.load(REPO, revision="v2").source["commit"] == other
    assert npdistil.load(REPO, revision=main).source["commit"] == main
    assert npdistil.load(REPO, revision="v2").config.sinusoidal_pos_embds


def test_pytorch_bin_only_repo_and_vocab_txt_only_tokenizer(fake_hub):
    files = _files(skip=("model.safetensors", "tokenizer.json"))
    fake_hub.add_repo(REPO, files)
    model = npdistil.load(REPO)
    _check_numbers(model)
    ids, _, _ = _reference()
    texts = __import__("json").loads((FIXTURES / "tiny_reference.json").read_text())["texts"]
    with pytest.warns(UserWarning, match="truncated"):
        np.testing.assert_array_equal(model.tokenizer(texts).input_ids, ids)


def test_unknown_repo(fake_hub):
    with pytest.raises(HubError, match="repository not found"):
        npdistil.load("nobody/nothing")


def test_unknown_revision(fake_hub):
    fake_hub.add_repo(REPO, _st_only())
    with pytest.raises(HubError, match="no revision 'v9'"):
        npdistil.load(REPO, revision="v9")


def test_repo_without_config_or_weights(fake_hub):
    fake_hub.add_repo("org/no-config", {"model.safetensors": b"x"})
    with pytest.raises(HubError, match="no config.json"):
        npdistil.load("org/no-config")
    fake_hub.add_repo("org/no-weights", {"config.json": _st_only()["config.json"]})
    with pytest.raises(HubError, match="no weights file"):
        npdistil.load("org/no-weights")


def test_http_500_is_a_clear_error_quickly_and_leaves_no_converted_file(fake_hub, tmp_path):
    fake_hub.add_repo(REPO, _st_only())
    fake_hub.fail("model.safetensors", 500)
    start = time.monotonic()
    with pytest.raises(HubError, match="model.safetensors"):
        npdistil.load(REPO)
    print(
        f"HTTP 500: HubError after {time.monotonic() - start:.2f} s, "
        f"retries asked {fake_hub.retry_sleeps}"
    )
    assert _cache_files(tmp_path / "npdistil-cache") == []


def test_connection_dropped_mid_file_then_recovers(fake_hub, tmp_path):
    files = _st_only()
    fake_hub.add_repo(REPO, files)
    fake_hub.drop_after("model.safetensors", 1000, times=1)
    model = npdistil.load(REPO)  # huggingface_hub resumes with a Range request
    ranges = [r for r in fake_hub.request_log if "range" in {k.lower() for k in r.headers}]
    print(f"dropped connection: resumed with {len(ranges)} Range request(s)")
    _check_numbers(model)


def test_connection_dropped_every_time_is_a_clear_error(fake_hub, tmp_path):
    fake_hub.add_repo(REPO, _st_only())
    fake_hub.drop_after("model.safetensors", 1000)
    with pytest.raises(HubError, match="model.safetensors"):
        npdistil.load(REPO)
    assert _cache_files(tmp_path / "npdistil-cache") == []
    snapshots = list((tmp_path / "hf" / "hub").rglob("snapshots/*/model.safetensors"))
    assert snapshots == []  # no truncated file passed off as complete


def test_content_not_matching_the_advertised_hash_is_refused_and_evicted(fake_hub, tmp_path):
    files = _st_only()
    fake_hub.add_repo(REPO, files)
    fake_hub.corrupt("model.safetensors", files["model.safetensors"][:-4] + b"\0\0\0\0", times=1)
    with pytest.raises(HubError, match="sha256"):
        npdistil.load(REPO)
    assert _cache_files(tmp_path / "npdistil-cache") == []
    blobs = list((tmp_path / "hf" / "hub").rglob("blobs/*"))
    assert all(b.read_bytes() != files["model.safetensors"][:-4] + b"\0\0\0\0" for b in blobs)
    _check_numbers(npdistil.load(REPO))  # the next attempt downloads a good copy


def test_force_download_picks_up_a_new_commit(fake_hub):
    first = fake_hub.add_repo(REPO, _st_only("tiny"))
    assert npdistil.load(REPO).source["commit"] == first
    second = fake_hub.add_repo(REPO, _st_only("tiny-sinusoidal"))
    assert npdistil.load(REPO).source["commit"] == first  # cached: no request
    assert npdistil.load(REPO, force_download=True).source["commit"] == second


def test_offline_bin_only_repo_converts_from_the_hf_cache(fake_hub, monkeypatch, tmp_path):
    """A repository with pytorch_model.bin and vocab.txt only, downloaded once: offline, the
    cache's files are enough (model.safetensors and tokenizer.json are not asked for)."""
    fake_hub.add_repo(REPO, _files(skip=("model.safetensors", "tokenizer.json")))
    npdistil.load(REPO)
    offline(monkeypatch)
    fake_hub.reset_requests()
    _check_numbers(npdistil.load(REPO, cache_dir=tmp_path / "other-npdistil-cache"))
    assert fake_hub.requests == []


def test_offline_with_config_but_no_weights_cached_is_a_clear_error(fake_hub, monkeypatch):
    import huggingface_hub

    fake_hub.add_repo(REPO, _st_only())
    huggingface_hub.hf_hub_download(REPO, "config.json")  # only the config is cached
    offline(monkeypatch)
    with pytest.raises(HubError, match="no weights file .* in the local cache"):
        npdistil.load(REPO)
