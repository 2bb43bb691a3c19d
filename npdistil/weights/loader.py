"""Where a model comes from: a Hub id, a local Hugging Face folder, or an npdistil file.

Checkpoints are converted once into the npdistil cache (``$NPDISTIL_CACHE``, else
``$XDG_CACHE_HOME/npdistil``, else ``~/.cache/npdistil``): ``hub/{org}--{name}/{commit}``
for the Hub, ``local/{folder name}-{hash of its path}`` for a local folder. A local folder's
converted file records the size and modification time of the folder's files; when they change,
the folder is converted again into the same name, replacing the stale copy. A second ``load``
of the same model opens that file as a memory map and makes no network request at all (pass
``force_download=True`` to look for a newer commit).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from ..errors import CheckpointError, HubError, HubUnreachableError, IntegrityError
from ..text import sentence
from . import hub, storage
from .convert import (
    FORMAT_VERSION,
    WEIGHT_FILES,
    ConvertedFile,
    convert_folder,
    open_converted,
    recompress,
)

__all__ = ["cache_root", "resolve", "export", "local_entry", "folder_fingerprint"]

log = logging.getLogger("npdistil")

DEFAULT_MODEL = "distilbert-base-cased"
# The files of a local folder whose change makes its converted copy stale.
_FOLDER_FILES = (
    "config.json",
    *WEIGHT_FILES,
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
)


def cache_root() -> Path:
    """The folder holding converted files."""
    if os.environ.get("NPDISTIL_CACHE"):
        return Path(os.environ["NPDISTIL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "npdistil"


def resolve(
    source: str | os.PathLike[str] = DEFAULT_MODEL,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    hf_cache_dir: str | os.PathLike[str] | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
) -> ConvertedFile:
    """Open the npdistil file for ``source``, downloading and converting it first if needed."""
    root = Path(cache_dir).expanduser() if cache_dir else cache_root()
    path = Path(source).expanduser()
    if path.is_file():
        return _open_file(path)
    if path.is_dir():
        return _from_folder(path, root)
    repo_id = _repo_id(source)
    try:
        return _from_hub(
            repo_id, revision or "main", root, hf_cache_dir, token, local_files_only, force_download
        )
    except HubUnreachableError as exc:  # perhaps a folder was meant, as "org/name" reads both ways
        raise HubUnreachableError(f"no local folder {repo_id!r}, and {exc}") from None


def _repo_id(source: str | os.PathLike[str]) -> str:
    text = str(source)
    if (
        text.startswith((".", "/", "~"))
        or text.endswith(".safetensors")
        or not hub.is_repo_id(text)
    ):
        raise CheckpointError(f"{text}: no such file or folder (and not a Hub repository id)")
    return text


def _open_file(path: Path) -> ConvertedFile:
    """An npdistil file given by path; any other file is named for what it is."""
    try:
        storage.read_header(path)
    except CheckpointError as exc:
        with open(path, "rb") as f:
            zipped = f.read(4) == b"PK\x03\x04"
        what = "a PyTorch checkpoint" if zipped else f"not even a safetensors file: {exc}"
        raise CheckpointError(
            f"{path}: not an npdistil file ({what}); make one from its checkpoint folder or Hub "
            "id with `npdistil convert`, or load the folder"
        ) from None
    return open_converted(path)


# ---- local folders ------------------------------------------------------------------------------


def folder_fingerprint(folder: Path) -> str:
    """Names, sizes and modification times of the files of a folder that its conversion reads
    (sentence-transformers module files included): when this changes, the converted copy is
    stale."""
    key = hashlib.sha256()
    files = [folder / name for name in _FOLDER_FILES] + sentence.folder_files(folder)
    for path in files:
        if path.is_file():
            st = path.stat()
            name = path.relative_to(folder).as_posix()
            key.update(f"{name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return key.hexdigest()[:32]


def local_entry(root: Path, folder: Path) -> Path:
    """The one converted file of a local folder in the cache at ``root``: named by its path."""
    folder = folder.resolve()
    key = hashlib.sha256(str(folder).encode()).hexdigest()[:16]
    return root / "local" / f"{folder.name}-{key}.safetensors"


def _from_folder(folder: Path, root: Path) -> ConvertedFile:
    folder = folder.resolve()
    out, fingerprint = local_entry(root, folder), folder_fingerprint(folder)
    if out.is_file():
        try:
            converted = _current(open_converted(out))
            if converted.source.get("fingerprint") == fingerprint:
                return converted
            log.info("converting %s again: its files changed", folder)
        except CheckpointError as exc:
            log.warning("reconverting: the cached copy %s is unusable (%s)", out, exc)
    convert_folder(folder, out, source={"folder": str(folder), "fingerprint": fingerprint})
    storage.remove_abandoned_temps(root)
    return open_converted(out)


def _from_hub(
    repo_id: str,
    revision: str,
    root: Path,
    hf_cache_dir: str | os.PathLike[str] | None,
    token: str | bool | None,
    local_files_only: bool,
    force_download: bool,
) -> ConvertedFile:
    commit = None if force_download else hub.cached_commit(repo_id, revision, hf_cache_dir)
    if commit and hub_entry(root, repo_id, commit).is_file():
        try:
            return _current(open_converted(hub_entry(root, repo_id, commit)))
        except CheckpointError as exc:
            log.warning("reconverting %s: the cached copy is unusable (%s)", repo_id, exc)

    snap = hub.download(
        repo_id,
        revision,
        cache_dir=hf_cache_dir,
        token=token,
        local_files_only=local_files_only,
        force_download=force_download,
    )
    out = hub_entry(root, repo_id, snap.commit)
    if out.is_file() and not force_download:
        try:
            return _current(open_converted(out))
        except CheckpointError as exc:
            log.warning("reconverting: the cached copy %s is unusable (%s)", out, exc)
    log.info("converting %s@%s to %s (once)", repo_id, snap.commit[:8], out)
    _convert_snapshot(snap, out)
    storage.remove_abandoned_temps(root)
    return open_converted(out)


def _current(file: ConvertedFile) -> ConvertedFile:
    """A cached conversion, if made by this npdistil's format (an older one may lack what the
    checkpoint has, such as its sentence-transformers modules)."""
    if file.format_version < FORMAT_VERSION:
        raise CheckpointError(
            f"{file.path}: format {file.format_version}, older than this npdistil's"
        )
    return file


def hub_entry(root: Path, repo_id: str, commit: str) -> Path:
    """The converted file of one commit of a Hub repository in the cache at ``root``."""
    return root / "hub" / repo_id.replace("/", "--") / f"{commit}.safetensors"


def _convert_snapshot(snap: hub.Snapshot, out: Path, dtype: str = "float32") -> None:
    source = {"repo": snap.repo_id, "revision": snap.revision, "commit": snap.commit}
    try:
        convert_folder(
            snap.folder, out, source=source, expected_sha256=snap.weights_sha256, dtype=dtype
        )
    except IntegrityError as exc:
        hub.evict(snap)  # so that the next attempt downloads it again
        where = f"{snap.repo_id}@{snap.revision}"
        raise HubError(f"{where}: {exc}; removed it from the cache") from None


# ---- converting to a file of one's own ----------------------------------------------------------


def export(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    hf_cache_dir: str | os.PathLike[str] | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    dtype: str | None = None,
) -> Path:
    """Write the npdistil file of ``source`` to ``output`` (what ``npdistil convert`` does),
    its big matrices stored as ``dtype`` ("float32", "float16" or "int8"; see quantize.py;
    default: float32 from a checkpoint, as they are from an npdistil file).

    A local folder or a Hub download is converted straight into ``output``, written once; a
    model already converted in the cache, or an npdistil file, is copied (or re-stored as
    ``dtype``). Returns ``output``.
    """
    import shutil

    out = Path(output)

    def copy(converted: Path) -> Path:
        if dtype is None or dtype == open_converted(converted).dtype:
            storage.replace_atomic(out, lambda tmp: shutil.copyfile(converted, tmp))
            return out
        return recompress(converted, out, dtype)

    path = Path(source).expanduser()
    if path.is_file():
        _open_file(path)  # an npdistil file, checked
        return copy(path)
    if path.is_dir():
        folder = path.resolve()
        convert_folder(folder, out, source={"folder": str(folder)}, dtype=dtype or "float32")
        return out
    repo_id, revision = _repo_id(source), revision or "main"
    root = Path(cache_dir).expanduser() if cache_dir else cache_root()
    commit = hub.cached_commit(repo_id, revision, hf_cache_dir)
    if commit and hub_entry(root, repo_id, commit).is_file():
        try:
            return copy(_current(open_converted(hub_entry(root, repo_id, commit))).path)
        except CheckpointError:
            pass  # unusable: convert afresh
    try:
        snap = hub.download(
            repo_id,
            revision,
            cache_dir=hf_cache_dir,
            token=token,
            local_files_only=local_files_only,
        )
    except HubUnreachableError as exc:
        raise HubUnreachableError(f"no local folder {repo_id!r}, and {exc}") from None
    _convert_snapshot(snap, out, dtype or "float32")
    return out
