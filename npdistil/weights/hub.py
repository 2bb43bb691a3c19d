"""Downloading checkpoints from the Hugging Face Hub with ``huggingface_hub``.

Only the files npdistil needs are fetched: ``config.json``, one weights file
(``model.safetensors``, else ``pytorch_model.bin``), the tokenizer (``tokenizer.json``, else
``vocab.txt`` and ``tokenizer_config.json``), and for a sentence-transformers model
(``modules.json``) its modules' configurations and Dense weights. They land in the ordinary
Hugging Face cache, so ``HF_HOME``, ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``, ``HF_ENDPOINT`` and
``HF_TOKEN`` work as everywhere else, and files shared with transformers are not downloaded
twice.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import socket
import sys
from pathlib import Path
from typing import NamedTuple

from ..errors import HubError, HubUnreachableError
from ..text import sentence
from .convert import WEIGHT_FILES

__all__ = ["Snapshot", "download", "cached_commit", "evict", "is_repo_id", "unreachable"]

log = logging.getLogger("npdistil")

_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# "name" (legacy ids such as distilbert-base-cased) or "org/name".
_REPO_ID = re.compile(r"(?:[\w.-]+/)?[\w.-]+")


class Snapshot(NamedTuple):
    repo_id: str
    revision: str  # as asked: a branch, tag or commit
    commit: str  # the 40-hex commit it resolved to
    folder: Path  # the cache's snapshot folder holding the downloaded files
    weights_sha256: str | None  # the Hub's LFS hash of the weights file, when it has one


def is_repo_id(text: str) -> bool:
    return bool(_REPO_ID.fullmatch(text)) and not text.startswith((".", "-")) and ".." not in text


def hf_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The Hugging Face cache folder, found as huggingface_hub finds it, without importing it
    (which alone takes a good part of a second)."""
    if cache_dir:
        return Path(cache_dir)
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:  # already imported: its (possibly patched) settings rule
        return Path(constants.HF_HUB_CACHE)
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    home = os.environ.get("HF_HOME") or Path(xdg) / "huggingface"
    return Path(home).expanduser() / "hub"


def cached_commit(
    repo_id: str, revision: str, cache_dir: str | os.PathLike[str] | None = None
) -> str | None:
    """The commit ``revision`` pointed to when it was last downloaded, without any request:
    the cache keeps it in ``models--{org}--{name}/refs/{revision}``."""
    if _COMMIT.fullmatch(revision):
        return revision
    ref = hf_cache_dir(cache_dir) / f"models--{repo_id.replace('/', '--')}" / "refs" / revision
    try:
        commit = ref.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return commit if _COMMIT.fullmatch(commit) else None


def download(
    repo_id: str,
    revision: str = "main",
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
) -> Snapshot:
    """Fetch (or find in the cache) the files of a DistilBERT checkpoint on the Hub.

    A Hub that can't be reached at all (see ``unreachable``) is not retried: the files come
    from the cache, or a HubUnreachableError says how to work offline.
    """
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub import errors as hf_errors

    offline = local_files_only or constants.HF_HUB_OFFLINE
    if not offline and (why := unreachable(repo_id, revision, token)):
        where = f"the Hugging Face Hub at {constants.ENDPOINT} can't be reached ({why})"
        if force_download:  # asked for what the Hub has now: the cache won't do
            raise HubUnreachableError(f"{repo_id}@{revision}: can't download it again: {where}")
        try:
            return download(repo_id, revision, cache_dir=cache_dir, local_files_only=True)
        except HubUnreachableError:
            raise HubUnreachableError(
                f"{repo_id}@{revision} is not in the local cache and {where}. To work offline: "
                "download the model once while online, then use --offline (HF_HUB_OFFLINE=1); "
                "or pass a local checkpoint folder"
            ) from None

    def fetch(filename: str, rev: str, required: bool = True) -> Path | None:
        try:
            return Path(
                huggingface_hub.hf_hub_download(
                    repo_id,
                    filename,
                    revision=rev,
                    cache_dir=None if cache_dir is None else Path(cache_dir),
                    token=token,
                    local_files_only=local_files_only,
                    force_download=force_download,
                )
            )
        except hf_errors.LocalEntryNotFoundError:  # before EntryNotFoundError: a subclass
            if offline and not required:  # a file the cache lacks: the next choice may be there
                return None
            why = (
                "offline mode is on (--offline, HF_HUB_OFFLINE=1 or local_files_only)"
                if offline
                else "the Hub can't be reached"
            )
            raise HubUnreachableError(
                f"{repo_id}@{revision}: {filename} is not in the local cache and {why}; "
                "download the model once while online, or pass a local checkpoint folder"
            ) from None
        except hf_errors.EntryNotFoundError:
            if required:
                raise HubError(
                    f"{repo_id}@{revision}: no {filename} in the repository (is it a "
                    "transformers DistilBERT checkpoint?)"
                ) from None
            return None
        except hf_errors.RevisionNotFoundError:
            raise HubError(f"{repo_id}: no revision {revision!r} on the Hub") from None
        except hf_errors.RepositoryNotFoundError:
            raise HubError(
                f"{repo_id}: repository not found on the Hub (a typo, or a private or gated "
                "repository: log in with `hf auth login` or pass token=)"
            ) from None
        except Exception as exc:  # HTTP errors, and transport errors of the HTTP client
            raise HubError(
                f"{repo_id}@{revision}: downloading {filename} failed: {type(exc).__name__}: {exc}"
            ) from exc

    config_path = fetch("config.json", revision)
    assert config_path is not None
    commit = config_path.parent.name  # <cache>/models--org--name/snapshots/<commit>/config.json
    weights = next((p for name in WEIGHT_FILES if (p := fetch(name, commit, False))), None)
    if weights is None:
        names = " or ".join(WEIGHT_FILES)
        if offline:
            raise HubUnreachableError(
                f"{repo_id}@{revision}: no weights file ({names}) in the local cache and offline "
                "mode is on; download the model once while online, or pass a local folder"
            )
        raise HubError(f"{repo_id}@{revision}: no weights file ({names})")
    if fetch("tokenizer.json", commit, required=False) is None:
        if fetch("vocab.txt", commit, required=False):
            fetch("tokenizer_config.json", commit, required=False)
        elif offline:  # not cached, or not in the repository: offline, we can't tell which
            raise HubUnreachableError(
                f"{repo_id}@{revision}: no tokenizer (tokenizer.json or vocab.txt) in the local "
                "cache and offline mode is on; download the model once while online"
            )

    def fetch_module_file(filename: str) -> Path | None:
        """A sentence-transformers file, or None if the repository has none. Offline, what
        the cache holds: a plain checkpoint cached without asking for these is not an error."""
        if not (local_files_only or huggingface_hub.constants.HF_HUB_OFFLINE):
            return fetch(filename, commit, required=False)
        cached = huggingface_hub.try_to_load_from_cache(
            repo_id,
            filename,
            cache_dir=None if cache_dir is None else Path(cache_dir),
            revision=commit,
        )
        if cached is None and filename == "modules.json":
            log.warning(
                "%s: offline, and the cache does not say whether it has a modules.json: "
                "taken as a plain checkpoint (load it once online if it is a "
                "sentence-transformers model)",
                repo_id,
            )
        return Path(cached) if isinstance(cached, str) else None

    modules = fetch_module_file("modules.json")
    if modules is not None:  # a sentence-transformers model: what its modules read too
        for alternatives in sentence.module_files(modules.read_bytes()):
            next((p for name in alternatives if fetch_module_file(name) is not None), None)
    blob = Path(weights).resolve().name  # LFS blobs are named by their sha256
    return Snapshot(
        repo_id=repo_id,
        revision=revision,
        commit=commit,
        folder=config_path.parent,
        weights_sha256=blob if _SHA256.fullmatch(blob) else None,
    )


def evict(snapshot: Snapshot) -> None:
    """Remove a snapshot's downloaded weights from the cache (after they failed a check)."""
    for name in WEIGHT_FILES:
        link = snapshot.folder / name
        if link.exists() or link.is_symlink():
            target = link.resolve()
            link.unlink(missing_ok=True)
            if target != link:
                target.unlink(missing_ok=True)


# ---- is the Hub there at all? -------------------------------------------------------------------


def unreachable(repo_id: str, revision: str, token: str | bool | None = None) -> str | None:
    """Why the Hub can't be reached at all, or None: one HEAD request, not retried.

    huggingface_hub retries every network error for ~23 s (1, 2, 4, 8, 8 s apart) before it
    gives up. That is right for a Hub that answers 5xx or drops a connection, and wasted when
    no connection can be made: a host name that does not resolve, a refused connection, no
    route, a connect timeout. Those fail here at once; anything else (an answer of any status,
    a dropped connection) counts as reachable and is left to huggingface_hub and its retries.
    """
    import huggingface_hub
    from huggingface_hub import constants

    url = huggingface_hub.hf_hub_url(repo_id, "config.json", revision=revision)
    try:
        huggingface_hub.get_hf_file_metadata(
            url, token=token, timeout=constants.HF_HUB_ETAG_TIMEOUT
        )
    except Exception as exc:
        return _connection_failure(exc)
    return None


_NO_ROUTE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN}


def _connection_failure(exc: BaseException | None) -> str | None:
    """What kept a connection from being made, from the chain of causes of an HTTP client's
    error (httpx and requests both keep the socket error there), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, socket.gaierror):
            return f"can't resolve its host name: {exc.strerror or exc}"
        if isinstance(exc, ConnectionRefusedError):
            return "connection refused"
        if isinstance(exc, OSError) and exc.errno in _NO_ROUTE:
            return f"no route: {exc.strerror or exc}"
        if type(exc).__name__ == "ConnectTimeout":
            return "connection timed out"
        exc = exc.__cause__ or exc.__context__
    return None
