"""Where catalogs live: local folders, or remote locations (``https://``, ``http://``, ``s3://``) via fsspec.

A remote location becomes a ``upath.UPath`` that carries its storage options (so it can be pickled
to Dask workers and still reach the bucket), a local one stays a ``pathlib.Path``: code that joins,
names and tests paths works on both. The storage options are the user's: ``storage_options=`` in
Python, over the JSON in ``SURVEY_ENGINE_STORAGE_OPTIONS`` (read here, once per location, so the
CLI, job specs and the API all honour it), e.g. ``{"anon": true}`` or ``{"endpoint_url":
"http://127.0.0.1:9000", "key": "...", "secret": "..."}``. A flat object applies to every remote
protocol but HTTP (whose fsspec file system passes every option on to each request); an object keyed
by protocol (``{"s3": {...}, "https": {"headers": {...}}}``) gives each its own.

Reads take only what they need: Parquet files are opened without fsspec's read-ahead cache
(``cache_type="none"``), so pyarrow's footer read and its coalesced column-chunk reads are the
only requests (HTTP range requests, S3 ranged GETs); no file is downloaded whole.
"""

from __future__ import annotations

import contextlib
import json
import os
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import Any, Iterator

from survey_engine.errors import SurveyEngineError
from survey_engine.redact import redact_url

STORAGE_OPTIONS_ENV = "SURVEY_ENGINE_STORAGE_OPTIONS"
REMOTE_PROTOCOLS = ("http", "https", "s3", "s3a", "gs", "gcs", "abfs", "az", "memory")
_HTTP = ("http", "https")


class RemoteStorageError(SurveyEngineError, OSError):
    """A remote location that cannot be read or written (missing, refused, bad credentials, bad
    storage options); the message names the location, never a key or secret."""


def protocol_of(location: object) -> str:
    """``s3``, ``https``, ... of a URL or UPath; ``""`` for a local path."""
    proto = getattr(location, "protocol", None)
    if isinstance(proto, str) and not isinstance(location, PurePath):
        return proto if proto not in ("file", "local") else ""
    text = str(location)
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        return "" if scheme in ("file", "local") else scheme
    return ""


def is_remote(location: object) -> bool:
    """True for an ``https://``, ``s3://``, ... location (a URL string or a remote UPath)."""
    return protocol_of(location) != ""


def env_storage_options(protocol: str) -> dict[str, Any]:
    """The storage options for ``protocol`` from ``SURVEY_ENGINE_STORAGE_OPTIONS`` (JSON; empty if unset)."""
    raw = os.environ.get(STORAGE_OPTIONS_ENV, "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RemoteStorageError(
            f"{STORAGE_OPTIONS_ENV}: not valid JSON ({exc.msg} at character {exc.pos})"
        ) from None
    if not isinstance(value, dict):
        raise RemoteStorageError(
            f'{STORAGE_OPTIONS_ENV}: must be a JSON object such as {{"anon": true}}, got {type(value).__name__}'
        )
    if value and all(k in REMOTE_PROTOCOLS for k in value):  # keyed by protocol
        chosen = (
            value.get(protocol)
            or (value.get("https" if protocol == "http" else "http") if protocol in _HTTP else None)
            or {}
        )
        if not isinstance(chosen, dict):
            raise RemoteStorageError(
                f"{STORAGE_OPTIONS_ENV}: the options for {protocol!r} must be a JSON object"
            )
        return dict(chosen)
    return {} if protocol in _HTTP else dict(value)


def as_path(location: str | os.PathLike | Any, storage_options: dict | None = None):
    """A ``Path`` for a local location, a ``UPath`` (with the storage options: the environment's,
    then ``storage_options`` over them) for a remote one; a UPath or Path given is kept as it is
    unless ``storage_options`` are given."""
    if not is_remote(location):
        return location if isinstance(location, Path) else Path(location)
    from upath import UPath

    if isinstance(location, UPath) and not storage_options:
        return location
    protocol = protocol_of(location)
    options = {
        **env_storage_options(protocol),
        **(getattr(location, "storage_options", None) or {}),
        **(storage_options or {}),
    }
    return UPath(str(location), **options)


def display(location: object) -> str:
    """The location as errors and logs show it: URLs without user info or secret query values."""
    text = str(location)
    return redact_url(text) if is_remote(text) else text


@contextmanager
def parquet_source(path) -> Iterator[Any]:
    """What pyarrow opens for ``path``: the local path itself, or a remote file opened without a
    read-ahead cache (only the byte ranges pyarrow asks for travel). Errors of the remote storage
    become ``RemoteStorageError`` / ``FileNotFoundError`` naming the location."""
    if not is_remote(path):
        yield str(path)
        return
    handle = _call(path, lambda: path.fs.open(path.path, mode="rb", cache_type="none"))
    with handle:
        yield handle


def _call(path, action):
    """``action()`` with the backend's errors made ours: FileNotFoundError naming the location, or
    RemoteStorageError. They are raised outside the ``except`` so that they carry no context: Dask
    pickles an exception with its whole chain, and aiohttp's errors hold unpicklable headers."""
    error: Exception | None = None
    try:
        return action()
    except FileNotFoundError:
        error = FileNotFoundError(f"{display(path)}: not found")
    except Exception as exc:  # noqa: BLE001 - any backend's refusal: credentials, network, server
        error = remote_error(path, exc)
    raise error


def remote_error(path, exc: BaseException) -> RemoteStorageError:
    """A one-line error for a failed remote access: the location and the backend's reason, secrets removed."""
    reason = str(exc).strip() or type(exc).__name__
    options = getattr(path, "storage_options", None) or {}
    for value in _secret_values(options):
        reason = reason.replace(value, "REDACTED")
    if (
        isinstance(exc, PermissionError)
        or "AccessDenied" in reason
        or "InvalidAccessKeyId" in reason
        or "403" in reason
    ):
        hint = f"; check the credentials (storage_options=, or {STORAGE_OPTIONS_ENV})"
    else:
        hint = ""
    return RemoteStorageError(
        f"{display(path)}: cannot read ({type(exc).__name__}: {reason.splitlines()[0][:300]}){hint}"
    )


def _secret_values(options: dict) -> list[str]:
    out = []
    for key, value in options.items():
        if isinstance(value, dict):
            out += _secret_values(value)
        elif (
            isinstance(value, str)
            and len(value) >= 4
            and any(s in key.lower() for s in ("key", "secret", "token", "pass"))
        ):
            out.append(value)
    return out


def read_bytes(path) -> bytes:
    """A remote file's whole content in one request; errors as ``read_text``'s."""
    return _call(path, lambda: path.fs.cat_file(path.path))


def read_text(path) -> str:
    """A small text file's content (local or remote), remote errors as ``RemoteStorageError``."""
    if not is_remote(path):
        return Path(path).read_text(encoding="utf-8")
    return _call(path, lambda: path.fs.cat_file(path.path)).decode("utf-8")


def exists(path) -> bool:
    """``path.exists()``, with a remote refusal (bad credentials, server down) as ``RemoteStorageError``
    rather than a silent False."""
    if not is_remote(path):
        return Path(path).exists()
    if protocol_of(path) not in _HTTP:
        return bool(_call(path, lambda: path.fs.exists(path.path)))
    # fsspec's HTTP exists() swallows every error into False; a HEAD tells "missing" from "refused"
    try:
        _call(path, lambda: path.fs.info(path.path))
    except FileNotFoundError:
        return False
    return True


def list_files(folder) -> dict[str, int]:
    """Every file below ``folder`` (relative path -> size in bytes), one listing (paged by the store)."""
    if not is_remote(folder):
        root = Path(folder)
        return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}
    try:
        found = _call(folder, lambda: folder.fs.find(folder.path, detail=True))
    except FileNotFoundError:
        return {}
    prefix = folder.path.rstrip("/") + "/"
    return {
        name[len(prefix) :]: int(info.get("size") or 0)
        for name, info in found.items()
        if name.startswith(prefix) and info.get("type", "file") == "file"
    }


def portable(path) -> Any:
    """What travels to a Dask worker for ``path``: the plain string for a local file, the UPath
    (which pickles with its storage options) for a remote one."""
    return path if is_remote(path) else str(path)


def pyarrow_args(path) -> tuple[str, Any]:
    """(path, filesystem) for pyarrow's dataset readers (``pq.read_table``): the local path and
    None, or the remote path and its fsspec file system (used for folder partitions only)."""
    if not is_remote(path):
        return str(path), None
    return path.path, path.fs


def read_text_or_none(path) -> str | None:
    """A small text file's content, or None where there is none: one request for a remote file
    (not a HEAD and then a GET)."""
    try:
        return read_text(path)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


@contextlib.contextmanager
def storage_options_given(options: str | dict | None):
    """Within the block, ``options`` (a JSON object as text, or a dict: ``--storage-options`` /
    ``storage_options=``) are the storage options of every remote location, over the environment's;
    Dask workers started in the block inherit them (and remote paths carry theirs when pickled)."""
    if options is None or options == "" or options == {}:
        yield
        return
    if isinstance(options, str):
        try:
            options = json.loads(options)
        except json.JSONDecodeError as exc:
            raise RemoteStorageError(
                f"--storage-options: not valid JSON ({exc.msg} at character {exc.pos})"
            ) from None
    if not isinstance(options, dict):
        raise RemoteStorageError(
            f'--storage-options: must be a JSON object such as {{"anon": true}}, got {type(options).__name__}'
        )
    before = os.environ.get(STORAGE_OPTIONS_ENV)
    os.environ[STORAGE_OPTIONS_ENV] = json.dumps(options)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(STORAGE_OPTIONS_ENV, None)
        else:
            os.environ[STORAGE_OPTIONS_ENV] = before
