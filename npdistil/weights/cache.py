"""What is in npdistil's cache of converted files, and tidying it: ``npdistil cache``.

The cache (``loader.cache_root()``) holds ``hub/{org}--{name}/{commit}.safetensors`` and
``local/{folder name}-{path hash}.safetensors``, plus the temporary files of conversions under
way (``.*.tmp``). Only these are listed or removed; anything else in the folder is left alone.
The Hugging Face download cache is not touched (``hf cache`` manages it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

from ..errors import CheckpointError
from . import hub, storage
from .convert import FORMAT_VERSION
from .loader import cache_root, folder_fingerprint, local_entry

__all__ = ["PRUNABLE", "Entry", "entries", "prune", "clear"]

# States of an entry, and whether `prune` removes it.
CURRENT, STALE, ORPHAN, UNUSABLE = "current", "stale", "orphan", "unusable"
IN_USE, RECENT, ABANDONED = "in use", "writing", "abandoned"
PRUNABLE = {STALE, ORPHAN, UNUSABLE, ABANDONED}


class Entry(NamedTuple):
    path: Path
    size: int  # bytes
    state: str  # current, stale, orphan, unusable; for temporary files: in use, writing, abandoned
    source: str  # "org/name@commit", a folder path, or what the file is
    why: str  # what makes it stale, orphan or unusable ("" when current)


def entries(root: Path | None = None) -> list[Entry]:
    """Every converted and temporary file in the cache, sorted by path."""
    root = cache_root() if root is None else root
    found = []
    for path in sorted(root.glob("hub/*/*.safetensors")) + sorted(root.glob("local/*.safetensors")):
        found.append(_describe(root, path))
    for tmp in sorted(root.rglob(f".*{storage.TEMP_SUFFIX}")):
        state, size = storage.temp_state(tmp)
        if state != "gone":
            what = {"in use": IN_USE, "recent": RECENT, "abandoned": ABANDONED}[state]
            found.append(Entry(tmp, size, what, "temporary file of a conversion", ""))
    return found


def prune(root: Path | None = None, *, dry_run: bool = False) -> list[Entry]:
    """Remove stale, orphan and unusable converted files and abandoned temporary files; returns
    what was (with ``dry_run``: would be) removed."""
    root = cache_root() if root is None else root
    gone = [e for e in entries(root) if e.state in PRUNABLE]
    if not dry_run:
        gone = [e for e in gone if _remove(e)]
        _remove_empty_folders(root)
    return gone


def clear(root: Path | None = None) -> list[Entry]:
    """Remove every converted file, and every temporary file no live writer holds."""
    root = cache_root() if root is None else root
    gone = [e for e in entries(root) if e.state != IN_USE and _remove(e, force=True)]
    _remove_empty_folders(root)
    return gone


def _describe(root: Path, path: Path) -> Entry:
    size = path.stat().st_size
    try:
        meta = storage.read_header(path).metadata
        if meta.get("format") != "npdistil":
            raise CheckpointError("not an npdistil file")
        source = json.loads(meta.get("source", "{}"))
        version = int(meta.get("format_version", "0"))
    except (CheckpointError, ValueError) as exc:
        return Entry(path, size, UNUSABLE, "?", str(exc))
    name = (
        f"{source['repo']}@{str(source.get('commit', '?'))[:12]}"
        if "repo" in source
        else str(source.get("folder", "?"))
    )
    if version < FORMAT_VERSION:  # loading converts it again (into the same name)
        return Entry(path, size, STALE, name, f"written in npdistil's older format {version}")
    if "repo" in source:
        why = _superseded(source)
        return Entry(path, size, STALE if why else CURRENT, name, why)
    folder = Path(source.get("folder", ""))
    if not folder.is_dir():
        return Entry(path, size, ORPHAN, str(folder), "the folder is gone")
    if local_entry(root, folder) != path:
        return Entry(path, size, STALE, str(folder), "an older copy (named the old way)")
    if source.get("fingerprint") != folder_fingerprint(folder):
        return Entry(path, size, STALE, str(folder), "the folder changed since")
    return Entry(path, size, CURRENT, str(folder), "")


def _superseded(source: dict) -> str:
    """Why a Hub commit's converted file is stale ("" if it is not): the Hugging Face cache
    still knows the repository, but none of its branches or tags points to this commit."""
    refs = hub.hf_cache_dir() / f"models--{source['repo'].replace('/', '--')}" / "refs"
    try:
        commits = {p.read_text(encoding="utf-8").strip() for p in refs.rglob("*") if p.is_file()}
    except OSError:
        return ""
    if not commits or source.get("commit") in commits:
        return ""
    return "superseded: the downloaded branches and tags point to another commit"


def _remove(entry: Entry, force: bool = False) -> bool:
    if entry.path.name.endswith(storage.TEMP_SUFFIX):
        # Only a file no live writer holds; abandoned ones by age unless clearing everything.
        age = 0 if force else storage.ABANDONED_AFTER_S
        state, _ = storage.temp_state(entry.path, age, remove=True)
        return state == "removed"
    try:
        entry.path.unlink()
    except FileNotFoundError:
        return False
    return True


def _remove_empty_folders(root: Path) -> None:
    for folder in sorted((p for p in root.glob("hub/*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            os.rmdir(folder)
