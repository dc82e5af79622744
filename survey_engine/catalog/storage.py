"""Where catalogs live: local folders, or remote locations (``https://``, ``http://``, ``s3://``) via fsspec.

A remote location becomes a ``upath.UPath`` that carries its storage options (so it can be pickled
to Dask workers and still reach the bucket), a local one stays a ``pathlib.Path``: code that joins,
names and tests paths works on both. The storage options are the user's: ``storage_options=`` in
Python, over the JSON in ``SURVEY_ENGINE_STORAGE_OPTIONS`` (read here, once per location, so the
CLI, job specs and the API all honour it), e.g. ``{"anon": true}`` or ``{"endpoint_url":
"http://127.0.0.1:9000", "key": "...", "secret": "..."}``. A flat object applies to every remote
protocol but HTTP (whose fsspec file system passes every option on to each request); an object keyed
by protocol (``{"s3": {...}, "https": {"headers": {...}}}``) gives each its own.

Reads take only what they need, in as few round trips as they can: a partition file is read by
one suffix range request for its tail (``bytes=-65536``: the footer, and the whole file when it is
smaller; no HEAD for its size), then one request per coalesced run of the requested columns'
chunks, issued together (``cat_ranges``); the files of one task are fetched side by side
(``map_concurrently``). A whole small file (properties, ``partition_info.csv``, ``_metadata``) is
one GET. Servers answer each request after a round trip (1 ms for nginx on loopback, 20-50 ms for
S3 in a region, about 40 ms for moto), so requests in sequence are what makes a remote read slow.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import Any, Callable, Iterator, TypeVar

from survey_engine.errors import SurveyEngineError
from survey_engine.redact import redact_url

STORAGE_OPTIONS_ENV = "SURVEY_ENGINE_STORAGE_OPTIONS"
REMOTE_PROTOCOLS = ("http", "https", "s3", "s3a", "gs", "gcs", "abfs", "az", "memory")
_HTTP = ("http", "https")
FOOTER_SAMPLE_BYTES = 64 * 1024  # the tail fetched first: a Parquet footer of a few hundred columns
COALESCE_GAP_BYTES = 64 * 1024  # column chunks closer than this are fetched as one range
_T = TypeVar("_T")


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


def access_key(location: object) -> str:
    """The location with a digest of its storage options: what caches of remote content are keyed
    by, so that other credentials for the same URL are asked of the server again (and refused)."""
    import hashlib

    options = json.dumps(getattr(location, "storage_options", None) or {}, sort_keys=True, default=str)
    return f"{location}#{hashlib.sha256(options.encode()).hexdigest()[:16]}"


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


def _whole_file_options(path) -> dict[str, Any]:
    """What makes ``cat_file`` one GET: s3fs asks for the size first (a HEAD) to split large
    downloads into parallel parts unless told to fetch in one piece."""
    return {"max_concurrency": 1} if protocol_of(path) in ("s3", "s3a") else {}


def read_bytes(path) -> bytes:
    """A remote file's whole content in one request (no HEAD first); errors as ``read_text``'s."""
    return _call(path, lambda: path.fs.cat_file(path.path, **_whole_file_options(path)))


def read_text(path) -> str:
    """A small text file's content (local or remote), remote errors as ``RemoteStorageError``."""
    if not is_remote(path):
        return Path(path).read_text(encoding="utf-8")
    return read_bytes(path).decode("utf-8")


def map_concurrently(func: Callable[[Any], _T], paths: list, threads: bool = False) -> list[_T]:
    """``[func(p) for p in paths]``, run side by side in threads when more than one path is remote
    (each mostly waits on the network) or ``threads`` is set, in order otherwise; the first error is
    raised."""
    if not threads and sum(is_remote(p) for p in paths) < 2:
        return [func(p) for p in paths]
    with ThreadPoolExecutor(max_workers=min(len(paths), 16)) as pool:
        return list(pool.map(func, paths))


class _KnownRanges(io.RawIOBase):
    """A read-only file of ``size`` bytes whose known byte ranges are held in memory; a read outside
    them is fetched from the remote file (one request), which pyarrow's reads planned from the
    footer never need."""

    def __init__(self, path, size: int, parts: dict[int, bytes]):
        super().__init__()
        self._path, self._size, self._pos = path, size, 0
        self._parts = sorted(parts.items())

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = offset if whence == 0 else self._pos + offset if whence == 1 else self._size + offset
        return self._pos

    def read(self, n: int = -1) -> bytes:
        start = self._pos
        stop = self._size if n is None or n < 0 else min(self._size, start + n)
        self._pos = stop
        for offset, data in self._parts:
            if offset <= start and stop <= offset + len(data):
                return data[start - offset : stop - offset]
        return _call(self._path, lambda: self._path.fs.cat_file(self._path.path, start=start, end=stop))

    def readall(self) -> bytes:
        return self.read(-1)


def remote_parquet_footer(path) -> tuple[bytes, Any, bool]:
    """(the file's tail, its ``pyarrow.parquet.FileMetaData``, whether the tail is the whole file)
    from one suffix range request (two for a footer larger than ``FOOTER_SAMPLE_BYTES``). A file
    without Parquet's closing magic is an ``OSError`` naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tail = _call(path, lambda: path.fs.cat_file(path.path, start=-FOOTER_SAMPLE_BYTES))
    whole = len(tail) != FOOTER_SAMPLE_BYTES  # shorter: the file is; longer: the server sent it all
    if len(tail) < 12 or tail[-4:] != b"PAR1":
        raise OSError(f"{display(path)}: not a Parquet file (no PAR1 magic at its end)")
    footer_length = int.from_bytes(tail[-8:-4], "little") + 8
    if footer_length > len(tail):
        if whole:
            raise OSError(
                f"{display(path)}: footer length {footer_length} exceeds the file ({len(tail)} bytes)"
            )
        tail = _call(path, lambda: path.fs.cat_file(path.path, start=-footer_length))
    return tail, pq.read_metadata(pa.BufferReader(b"PAR1" + tail[-footer_length:])), whole


def remote_parquet(path, columns: list[str] | None = None) -> tuple[Any, Any]:
    """(a file object, its ``FileMetaData``) for pyarrow to read ``columns`` (all if None) of a
    remote Parquet file: the footer from one suffix request, then the byte ranges of those columns'
    chunks in every row group, coalesced and fetched together; pyarrow then reads from memory.
    Pass the metadata to ``pq.ParquetFile(..., metadata=)`` so the footer is not read again."""
    from fsspec.utils import merge_offset_ranges

    tail, metadata, whole = remote_parquet_footer(path)
    if whole:
        return io.BytesIO(tail), metadata
    wanted = None if columns is None else set(columns)
    starts, stops, data_end = [], [], 4
    for i in range(metadata.num_row_groups):
        group = metadata.row_group(i)
        for j in range(group.num_columns):
            chunk = group.column(j)
            start = chunk.data_page_offset
            if chunk.has_dictionary_page and 0 < chunk.dictionary_page_offset < start:
                start = chunk.dictionary_page_offset
            stop = start + chunk.total_compressed_size
            data_end = max(data_end, stop)
            if wanted is None or chunk.path_in_schema.split(".")[0] in wanted:
                starts.append(start)
                stops.append(stop)
    footer = tail[-(int.from_bytes(tail[-8:-4], "little") + 8) :]
    parts = {data_end: footer}
    if starts:
        _, starts, stops = merge_offset_ranges(
            [path.path] * len(starts), starts, stops, max_gap=COALESCE_GAP_BYTES, sort=True
        )
        blocks = _call(path, lambda: path.fs.cat_ranges([path.path] * len(starts), starts, stops))
        for start, stop, block in zip(starts, stops, blocks):
            if isinstance(block, BaseException):
                raise remote_error(path, block)
            if len(block) != stop - start:
                raise OSError(f"{display(path)}: bytes {start}-{stop} came back short ({len(block)} bytes)")
            parts[start] = block
    # the file as pyarrow sees it: the chunks at their own offsets, the footer right after the data
    return _KnownRanges(path, data_end + len(footer), parts), metadata


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
