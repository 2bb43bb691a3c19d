"""Where a model comes from: a Hub id, a local Hugging Face folder, or an npdistil file.

Checkpoints are converted once into the npdistil cache (``$NPDISTIL_CACHE``, else
``$XDG_CACHE_HOME/npdistil``, else ``~/.cache/npdistil``), keyed by repository and commit for
the Hub and by path, size and modification time for local folders. A second ``load`` of the
same model opens that file as a memory map and makes no network request at all (pass
``force_download=True`` to look for a newer commit).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from . import hub, sentence
from .convert import FORMAT_VERSION, WEIGHT_FILES, ConvertedFile, convert_folder, open_converted
from .errors import CheckpointError, HubError, IntegrityError

__all__ = ["cache_root", "resolve"]

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
        return open_converted(path)
    if path.is_dir():
        return _from_folder(path, root)
    text = str(source)
    if (
        text.startswith((".", "/", "~"))
        or text.endswith(".safetensors")
        or not hub.is_repo_id(text)
    ):
        raise CheckpointError(f"{text}: no such file or folder (and not a Hub repository id)")
    return _from_hub(
        text, revision or "main", root, hf_cache_dir, token, local_files_only, force_download
    )


def _from_folder(folder: Path, root: Path) -> ConvertedFile:
    folder = folder.resolve()
    key = hashlib.sha256(str(folder).encode())
    files = [folder / name for name in _FOLDER_FILES] + sentence.folder_files(folder)
    for path in files:
        if path.is_file():
            st = path.stat()
            name = path.relative_to(folder).as_posix()
            key.update(f"{name}:{st.st_size}:{st.st_mtime_ns};".encode())
    out = root / "local" / f"{folder.name}-{key.hexdigest()[:16]}.safetensors"
    return _open_or_convert(
        out, lambda: convert_folder(folder, out, source={"folder": str(folder)})
    )


def _from_hub(
    repo_id: str,
    revision: str,
    root: Path,
    hf_cache_dir: str | os.PathLike[str] | None,
    token: str | bool | None,
    local_files_only: bool,
    force_download: bool,
) -> ConvertedFile:
    def converted(commit: str) -> Path:
        return root / "hub" / repo_id.replace("/", "--") / f"{commit}.safetensors"

    commit = None if force_download else hub.cached_commit(repo_id, revision, hf_cache_dir)
    if commit and converted(commit).is_file():
        try:
            return _current(open_converted(converted(commit)))
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
    out = converted(snap.commit)

    def convert() -> Path:
        log.info("converting %s@%s to %s (once)", repo_id, snap.commit[:8], out)
        source = {"repo": repo_id, "revision": revision, "commit": snap.commit}
        try:
            return convert_folder(
                snap.folder, out, source=source, expected_sha256=snap.weights_sha256
            )
        except IntegrityError as exc:
            hub.evict(snap)  # so that the next attempt downloads it again
            raise HubError(f"{repo_id}@{revision}: {exc}; removed it from the cache") from None

    return _open_or_convert(out, convert, force=force_download)


def _current(file: ConvertedFile) -> ConvertedFile:
    """A cached conversion, if made by this npdistil's format (an older one may lack what the
    checkpoint has, such as its sentence-transformers modules)."""
    if file.format_version < FORMAT_VERSION:
        raise CheckpointError(
            f"{file.path}: format {file.format_version}, older than this npdistil's"
        )
    return file


def _open_or_convert(out: Path, convert: Callable[[], Path], force: bool = False) -> ConvertedFile:
    if out.is_file() and not force:
        try:
            return _current(open_converted(out))
        except CheckpointError as exc:
            log.warning("reconverting: the cached copy %s is unusable (%s)", out, exc)
    convert()
    return open_converted(out)
