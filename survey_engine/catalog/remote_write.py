"""Writing a collection to an object store (``s3://``) so that no reader ever sees it half-written.

The collection is built in a local staging folder exactly as a local write builds it (with the
import's resume plan), then uploaded in an order that keeps every reader safe: the partition
files first, then each catalog's ``_metadata`` / ``partition_info.csv`` / point map, then its
``hats.properties`` (margins before the main catalog), and ``collection.properties`` last. Until
that last object exists, ``open_catalog`` says there is no catalog there; once it exists,
everything it names is in place (an object store's PUT is atomic per object).

A re-run resumes: an upload marker (``.survey_engine-upload.json``, holding the build's
fingerprint) written before the first file says what the objects already there belong to, and
files of the same build and size are not sent again; objects of an earlier, different attempt are
removed before any properties file is written. A complete collection of the same build is left
alone (nothing to do); a different one is refused, as a local ``--out`` is.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from survey_engine.catalog import layout, storage

UPLOAD_MARKER = ".survey_engine-upload.json"
STATE_FILE = "survey_engine.json"
STAGING_ENV = "SURVEY_ENGINE_STAGING"


def check_writable(out) -> None:
    """Refuse an output that cannot be written (a web server) with a message naming it."""
    if storage.protocol_of(out) in ("http", "https"):
        raise storage.RemoteStorageError(
            f"{storage.display(out)}: cannot write to an http(s) location (a web server is read-only here); "
            "write to a local folder or an object store (s3://bucket/path)"
        )


def local_stage(out) -> Path:
    """The local folder where the collection for remote ``out`` is built before it is uploaded
    (``$SURVEY_ENGINE_STAGING``, else ``~/.cache/survey_engine/remote-out``; one per location, so
    an interrupted run resumes there)."""
    root = Path(os.environ.get(STAGING_ENV) or Path.home() / ".cache" / "survey_engine" / "remote-out")
    key = hashlib.sha256(str(out).encode()).hexdigest()[:16]
    return root / key / layout.check_name(storage.as_path(out).name, f"{storage.display(out)}: output name")


def remote_state(out) -> dict | None:
    """The state (``survey_engine.json``) of a complete collection at ``out``; None when there is
    none (nothing, or only an unfinished upload); an error when ``out`` holds something else."""
    out = storage.as_path(out)
    if not storage.exists(out / layout.COLLECTION_FILE):
        if storage.exists(out / layout.PROPERTIES_FILE):
            raise storage.RemoteStorageError(
                f"{storage.display(out)}: already holds a catalog; choose another output or remove it"
            )
        return None
    try:
        return json.loads(storage.read_text(out / STATE_FILE))
    except FileNotFoundError:
        return {}


def publish(local: Path, out, fingerprint: str | None = None) -> None:
    """Upload the finished collection in ``local`` to ``out`` in reader-safe order (see the module)."""
    out = storage.as_path(out)
    check_writable(out)
    files = {str(p.relative_to(local)): p for p in sorted(local.rglob("*")) if p.is_file()}
    remote = storage.list_files(out)
    marker = _read_marker(out) if UPLOAD_MARKER in remote else None
    same_build = fingerprint is not None and marker is not None and marker.get("fingerprint") == fingerprint
    if not same_build:  # an upload of another build (or none): rewrite from scratch, marker first
        _remove(out, [rel for rel in remote if rel != UPLOAD_MARKER])
        _call(
            out,
            lambda: out.fs.pipe_file(
                f"{out.path}/{UPLOAD_MARKER}", json.dumps({"fingerprint": fingerprint}).encode()
            ),
        )
        remote = {}
    _remove(out, [rel for rel in remote if rel not in files and rel != UPLOAD_MARKER])

    def todo(rels):  # what an interrupted upload of this same build has not yet sent
        return [
            (files[r], r)
            for r in rels
            if remote.get(r) != files[r].stat().st_size or Path(r).name in _LAST_NAMES
        ]

    phases = [[r for r in files if "/dataset/Norder=" in f"/{r}"]]
    phases.append([r for r in files if r not in phases[0] and Path(r).name not in _LAST_NAMES])
    margins_first = sorted(
        (r for r in files if Path(r).name in ("properties", layout.PROPERTIES_FILE)),
        key=lambda r: (not _is_margin(local, r), r),
    )
    phases.append(margins_first)
    phases.append([r for r in files if r == STATE_FILE])
    phases.append([r for r in files if r == layout.COLLECTION_FILE])
    for phase in phases:
        if phase:
            _put(out, todo(phase))
    _call(out, lambda: out.fs.rm_file(f"{out.path}/{UPLOAD_MARKER}"))


_LAST_NAMES = {"properties", layout.PROPERTIES_FILE, layout.COLLECTION_FILE, STATE_FILE}


def _is_margin(local: Path, rel: str) -> bool:
    try:
        return layout.read_properties(local / rel).get("dataproduct_type") == "margin"
    except OSError:
        return False


def _read_marker(out) -> dict | None:
    try:
        return json.loads(storage.read_text(out / UPLOAD_MARKER))
    except (FileNotFoundError, ValueError):
        return None


def _remove(out, rels: list[str]) -> None:
    if rels:
        _call(out, lambda: out.fs.rm([f"{out.path}/{rel}" for rel in rels]))


def _put(out, pairs: list[tuple[Path, str]]) -> None:
    """Upload (local file, path relative to ``out``) pairs; s3fs sends a batch concurrently."""
    if not pairs:
        return
    lpaths = [str(p) for p, _ in pairs]
    rpaths = [f"{out.path}/{rel}" for _, rel in pairs]
    _call(out, lambda: out.fs.put(lpaths, rpaths))


def _call(out, action):
    return storage._call(out, action)


def write_via_stage(
    out, write_local: Callable[[Path], object], fingerprint: str | None = None, refuse_existing: bool = True
) -> object:
    """Build a collection with ``write_local(stage)`` (a local write to a fresh or resumable staging
    folder), upload it to ``out`` and remove the staging folder. A complete collection already at
    ``out`` is refused (``refuse_existing``), as a local output is."""
    out = storage.as_path(out)
    check_writable(out)
    if refuse_existing and remote_state(out) is not None:
        raise storage.RemoteStorageError(
            f"{storage.display(out)}: already exists and is not empty; choose another output or remove it"
        )
    stage = local_stage(out)
    stage.parent.mkdir(parents=True, exist_ok=True)
    if refuse_existing:
        layout.remove_tree(stage, stage.parent)
    result = write_local(stage)
    publish(stage, out, fingerprint)
    layout.remove_tree(stage, stage.parent)
    return result
