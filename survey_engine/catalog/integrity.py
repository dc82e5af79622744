"""Integrity checks, where they are cheap: a damaged catalog stops the command, it never loses rows.

Opening a catalog compares what its metadata says with what is on disk, without reading any
partition file: the set of partitions in ``partition_info.csv``, in ``dataset/_metadata`` (its
row groups name every file and hold its row count and byte ranges) and among the files under
``dataset/`` (one directory listing per ``Dir=`` folder), each file's size against the end of
its data as ``_metadata`` records it (one ``stat``: a truncated file is caught here), and the
total against ``hats_nrows``. Without ``_metadata`` the files' footers give the row counts.

Reading a partition (``read_checked``) checks its footer's row count against the count the
catalog's metadata holds, and verifies every page's CRC checksum as it decodes (partitions are
written with checksums: ``build.write_partition_file``). A file that cannot be opened or
decoded raises ``CatalogIntegrityError`` naming it. ``verify_catalog`` (``survey-engine
verify``) reads everything fully; see ``survey_engine.catalog.verify``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from survey_engine.catalog import layout, storage
from survey_engine.errors import MissingColumnError, SurveyEngineError

# Parquet's file tail: a 4-byte footer length and the magic "PAR1"; a footer is never empty.
_TAIL_BYTES = 8


class CatalogIntegrityError(SurveyEngineError, OSError):
    """A partition file is missing, truncated or corrupt, or the catalog's metadata disagrees
    with its files; the message names the file and what disagrees."""


@dataclass(frozen=True)
class MetadataFacts:
    """What ``dataset/_metadata`` says about each partition file: rows, and where its data ends."""

    rows: dict[tuple[int, int], int]
    data_end: dict[tuple[int, int], int]


# Above this many partitions, opening a local catalog checks its metadata against each other and
# hats_nrows only, as for a remote one: listing and stat-ing 10^5 files (~3 s) would cost more than
# a cross-match of a few hundred targets that reads a few hundred of them; each file read is still
# checked (its footer's rows against the metadata, every page's checksum), and ``survey-engine
# verify`` checks every file.
FILES_CHECKED_AT_OPEN = 20_000


def read_metadata_facts(catalog_dir: Path, with_ends: bool = True) -> MetadataFacts | None:
    """Rows and (``with_ends``) data end per partition from ``dataset/_metadata`` (None when
    there is none)."""
    meta_path = catalog_dir / layout.DATASET_DIR / "_metadata"
    if not storage.is_remote(meta_path) and not meta_path.exists():
        return None
    try:
        md = layout.read_parquet_metadata(meta_path)
    except FileNotFoundError:  # remotely asked by reading it, not by a HEAD first
        return None
    except storage.RemoteStorageError:
        raise
    except (OSError, pa.ArrowException) as exc:
        raise CatalogIntegrityError(
            f"{meta_path}: cannot read the catalog's _metadata ({exc}); "
            f"`survey-engine verify --repair {catalog_dir}` rebuilds it from the partitions"
        ) from None
    rows: dict[tuple[int, int], int] = {}
    data_end: dict[tuple[int, int], int] = {}
    for i in range(md.num_row_groups):
        rg = md.row_group(i)
        if rg.num_columns == 0:
            continue
        file_path = rg.column(0).file_path
        try:
            key = layout.pixel_from_path(file_path)
        except (KeyError, ValueError, IndexError):
            raise CatalogIntegrityError(
                f"{meta_path}: row group {i} names no partition file ({file_path!r})"
            ) from None
        rows[key] = rows.get(key, 0) + rg.num_rows
        if with_ends:
            # column chunks follow each other in a file: the last one ends the row group's data
            # (one chunk read per row group: the Python access to each costs ~20 us)
            data_end[key] = max(data_end.get(key, 0), _chunk_end(rg.column(rg.num_columns - 1)))
    return MetadataFacts(rows, data_end)


def _chunk_end(chunk) -> int:
    start = chunk.data_page_offset
    if chunk.has_dictionary_page and chunk.dictionary_page_offset is not None:
        start = min(start, chunk.dictionary_page_offset)
    return int(start + chunk.total_compressed_size)


def files_on_disk(catalog_dir: Path) -> dict[tuple[int, int], Path]:
    """Every ``Norder=K/Dir=D/Npix=N<suffix>`` under ``dataset/`` (directory listings only): the
    suffix is the catalog's ``hats_npix_suffix`` (``.parquet``, ``.parq``, or ``/`` for partitions
    stored as ``Npix=N/`` folders)."""
    if storage.is_remote(catalog_dir):
        return {key: path for key, (path, _) in remote_files(catalog_dir).items()}
    found: dict[tuple[int, int], Path] = {}
    dataset = catalog_dir / layout.DATASET_DIR
    if not dataset.is_dir():
        return found
    suffix = layout.npix_suffix(catalog_dir)
    if suffix != ".parquet":
        return _files_with_suffix(dataset, suffix)
    for order_dir in os.scandir(dataset):
        if not (order_dir.is_dir() and order_dir.name.startswith("Norder=") and order_dir.name[7:].isdigit()):
            continue
        order = int(order_dir.name[7:])
        for dir_dir in os.scandir(order_dir.path):
            if not (dir_dir.is_dir() and dir_dir.name.startswith("Dir=")):
                continue
            for entry in os.scandir(dir_dir.path):
                name = entry.name
                if name.startswith("Npix=") and name.endswith(".parquet") and name[5:-8].isdigit():
                    found[(order, int(name[5:-8]))] = Path(entry.path)
    return found


def _files_with_suffix(dataset: Path, suffix: str) -> dict[tuple[int, int], Path]:
    found: dict[tuple[int, int], Path] = {}
    folders = suffix == "/"
    for order_dir in dataset.glob("Norder=*"):
        for entry in order_dir.glob("Dir=*/Npix=*"):
            stem = (
                entry.name[5:]
                if folders
                else entry.name[5 : -len(suffix)]
                if entry.name.endswith(suffix)
                else ""
            )
            if stem.isdigit() and entry.is_dir() == folders and order_dir.name[7:].isdigit():
                found[(int(order_dir.name[7:]), int(stem))] = entry
    return found


def remote_files(catalog_dir) -> dict[tuple[int, int], tuple[object, int | None]]:
    """The partitions of a remote catalog in one listing of ``dataset/`` (an object store pages it,
    1,000 keys a request): (order, pix) -> (location, size; None for a folder partition)."""
    suffix = layout.npix_suffix(catalog_dir)
    dataset = catalog_dir / layout.DATASET_DIR
    found: dict[tuple[int, int], tuple[object, int | None]] = {}
    for rel, size in storage.list_files(dataset).items():
        parts = rel.split("/")
        if len(parts) < 3 or not parts[0].startswith("Norder=") or not parts[1].startswith("Dir="):
            continue
        name = parts[2]
        if suffix == "/":
            stem, size = (name[5:], None) if len(parts) > 3 else ("", None)
        else:
            stem = name[5 : -len(suffix)] if name.endswith(suffix) and len(parts) == 3 else ""
        if name.startswith("Npix=") and stem.isdigit() and parts[0][7:].isdigit():
            key = (int(parts[0][7:]), int(stem))
            found[key] = (layout.partition_path(catalog_dir, *key), size)
    return found


def _names(keys, catalog_dir: Path, limit: int = 3) -> str:
    keys = sorted(keys)
    shown = ", ".join(str(layout.partition_path(catalog_dir, o, p)) for o, p in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def checked_partition_rows(catalog_dir: Path, parts: pd.DataFrame, properties: dict) -> np.ndarray:
    """Rows of each partition in ``parts`` (in its order), after checking that partition_info.csv,
    ``_metadata``, the files on disk and ``hats_nrows`` agree; raises ``CatalogIntegrityError``.

    Cost: one read of ``_metadata`` (already small), a directory listing per ``Dir=`` folder and
    one ``stat`` per partition; no partition file is opened. Without ``_metadata``, each file's
    footer is read instead.

    A remote catalog (``https://``, ``s3://``) is not listed (a web server cannot, and a listing
    of a large bucket costs more than the match it serves): at open its metadata must agree with
    each other and with ``hats_nrows``; a missing, truncated or corrupt file is found when it is
    read (its footer's rows against the metadata, every page's checksum)."""
    catalog_dir = storage.as_path(catalog_dir)
    listed = list(zip(parts.Norder.tolist(), parts.Npix.tolist()))
    listed_set = set(listed)
    info_file = catalog_dir / layout.PARTITION_INFO_FILE
    # (remotely the file is taken to exist: only messages name it, and a HEAD per open is saved)
    info_name = (
        layout.PARTITION_INFO_FILE
        if storage.is_remote(info_file) or info_file.exists()
        else "dataset/_metadata"
    )
    if len(listed_set) != len(listed):
        raise CatalogIntegrityError(f"{catalog_dir / info_name}: lists a partition more than once")
    unlisted_files = storage.is_remote(catalog_dir) or len(listed) > FILES_CHECKED_AT_OPEN
    facts = read_metadata_facts(catalog_dir, with_ends=not unlisted_files)
    repair = f"`survey-engine verify --repair {catalog_dir}` rebuilds the metadata from the partition files"
    if facts is not None:
        _check_metadata_agree(catalog_dir, listed_set, facts, info_name, repair)
    if unlisted_files and (facts is not None or storage.is_remote(catalog_dir)):
        return _remote_rows_unlisted(catalog_dir, listed, facts, properties, repair)
    disk = files_on_disk(catalog_dir)
    missing = listed_set - disk.keys()
    if missing:
        raise CatalogIntegrityError(
            f"{_names(missing, catalog_dir, 1)}: partition file missing ({len(missing)} of "
            f"{len(listed)} listed in {info_name} are missing: {_names(missing, catalog_dir)})"
        )
    unlisted = disk.keys() - listed_set
    if unlisted:
        raise CatalogIntegrityError(
            f"{_names(unlisted, catalog_dir, 1)}: partition file on disk that {info_name} does not list "
            f"({len(unlisted)} such: {_names(unlisted, catalog_dir)}); {repair}"
        )
    if facts is not None:
        rows = np.array([facts.rows[k] for k in listed], dtype=np.int64)
        _check_file_ends(disk, listed, facts)
    else:
        rows = np.array(
            [
                layout.partition_num_rows(disk[k]) if disk[k].is_dir() else footer_rows(disk[k])
                for k in listed
            ],
            dtype=np.int64,
        )
    _check_nrows(catalog_dir, properties, rows, facts, repair)
    return rows


def _check_metadata_agree(catalog_dir, listed_set: set, facts, info_name: str, repair: str) -> None:
    """partition_info.csv and ``_metadata`` list the same partitions; else an error naming the odd one."""
    only_info = listed_set - facts.rows.keys()
    only_meta = facts.rows.keys() - listed_set
    if not (only_info or only_meta):
        return
    disk = {} if storage.is_remote(catalog_dir) else files_on_disk(catalog_dir)
    what = []
    if only_meta:
        where = "present" if only_meta <= disk.keys() else "some missing"
        what.append(
            f"dataset/_metadata lists {len(only_meta)} partition(s) that {info_name} lacks ({where} on disk: "
            f"{_names(only_meta, catalog_dir)})"
        )
    if only_info:
        where = "present" if only_info <= disk.keys() else "missing"
        what.append(
            f"{info_name} lists {len(only_info)} partition(s) that dataset/_metadata lacks ({where} on disk: "
            f"{_names(only_info, catalog_dir)})"
        )
    meta_file = catalog_dir / layout.DATASET_DIR / "_metadata"
    info_file = catalog_dir / layout.PARTITION_INFO_FILE
    odd_one = meta_file if only_info and not only_meta and only_info <= disk.keys() else info_file
    raise CatalogIntegrityError(f"{odd_one}: the catalog's metadata disagree: {'; '.join(what)}; {repair}")


def _check_file_ends(disk: dict, listed: list, facts) -> None:
    """Each partition file reaches at least where ``_metadata`` says its data ends (a truncated file is
    found without opening it); a partition stored as a folder of files is not checked here."""
    for key in listed:
        path = disk[key]
        if path.is_dir():
            continue
        size = path.stat().st_size
        if size < facts.data_end[key] + _TAIL_BYTES:
            raise CatalogIntegrityError(
                f"{path}: partition file truncated: {size} bytes, but dataset/_metadata says its "
                f"data ends at byte {facts.data_end[key]}"
            )


def _remote_rows_unlisted(
    catalog_dir, listed, facts: MetadataFacts | None, properties: dict, repair: str
) -> np.ndarray:
    """Rows per partition of a catalog on a server that lists nothing: from ``_metadata``, else
    from each partition's footer (a missing file is an error naming it)."""
    if facts is not None:
        rows = np.array([facts.rows[k] for k in listed], dtype=np.int64)
    else:
        paths = [layout.partition_path(catalog_dir, o, p) for o, p in listed]
        rows = np.array(
            [
                layout.partition_num_rows(f) if layout.is_partition_folder(f) else footer_rows(f)
                for f in paths
            ],
            dtype=np.int64,
        )
    _check_nrows(catalog_dir, properties, rows, facts, repair)
    return rows


def _check_nrows(
    catalog_dir, properties: dict, rows: np.ndarray, facts: MetadataFacts | None, repair: str
) -> None:
    if "hats_nrows" in properties:
        try:
            stated = int(properties["hats_nrows"])
        except ValueError:
            raise CatalogIntegrityError(
                f"{catalog_dir / layout.PROPERTIES_FILE}: hats_nrows={properties['hats_nrows']!r} "
                "is not a number"
            ) from None
        if stated != int(rows.sum()):
            source = "dataset/_metadata" if facts is not None else "the partition files' footers"
            raise CatalogIntegrityError(
                f"{catalog_dir / layout.PROPERTIES_FILE}: hats_nrows={stated}, but {source} hold "
                f"{int(rows.sum())} rows; {repair}"
            )


def footer_rows(path: Path) -> int:
    """Rows in one partition file by its footer; a missing or unreadable file names itself."""
    try:
        return int(layout.read_parquet_metadata(path).num_rows)
    except storage.RemoteStorageError:
        raise
    except FileNotFoundError:
        raise CatalogIntegrityError(f"{path}: partition file missing") from None
    except (OSError, pa.ArrowException) as exc:
        raise CatalogIntegrityError(f"{path}: partition file unreadable (bad footer: {exc})") from None


def read_checked(
    path: str | Path, columns: list[str] | None = None, expected_rows: int | None = None
) -> pa.Table:
    """Read a partition file with every page's checksum verified, its row count checked against
    ``expected_rows`` (the catalog's metadata); any damage raises ``CatalogIntegrityError``.
    A remote file is read by byte ranges: its footer, then the requested columns' chunks."""
    location = storage.as_path(path)
    try:
        if storage.is_remote(location):
            return _read_checked(path, None, columns, expected_rows, remote=location)
        with storage.parquet_source(location) as source:
            return _read_checked(path, source, columns, expected_rows)
    except FileNotFoundError:
        raise CatalogIntegrityError(f"{storage.display(path)}: partition file missing") from None


def _read_checked(
    path, source, columns: list[str] | None, expected_rows: int | None, remote=None
) -> pa.Table:
    try:
        if remote is not None:  # the footer, then the columns' byte ranges together
            source, metadata = storage.remote_parquet(remote, columns)
        else:
            metadata = None
        # pre-buffering coalesces a remote file's reads; on a local file it is one more copy (a
        # third of a 100k-row, 4-column read here)
        pf = pq.ParquetFile(
            source, metadata=metadata, page_checksum_verification=True, pre_buffer=remote is not None
        )
    except FileNotFoundError:
        raise CatalogIntegrityError(f"{path}: partition file missing") from None
    except (OSError, pa.ArrowException) as exc:
        raise CatalogIntegrityError(
            f"{path}: partition file unreadable (bad magic or footer: {exc})"
        ) from None
    with pf:
        if expected_rows is not None and pf.metadata.num_rows != expected_rows:
            raise CatalogIntegrityError(
                f"{path}: partition file holds {pf.metadata.num_rows} rows, but the catalog's metadata "
                f"says {expected_rows}"
            )
        if columns is not None:
            absent = [c for c in columns if c not in pf.schema_arrow.names]
            if absent:
                raise MissingColumnError(
                    f"{path}: column(s) {absent} not in the partition file; it has {pf.schema_arrow.names}"
                )
        try:
            table = pf.read(columns=columns)
        except (OSError, pa.ArrowException) as exc:
            raise CatalogIntegrityError(
                f"{path}: partition file corrupt (a page failed to decode or its checksum: {exc})"
            ) from None
    if table.num_rows != pf.metadata.num_rows:
        raise CatalogIntegrityError(
            f"{path}: decoded {table.num_rows} rows, its footer says {pf.metadata.num_rows}"
        )
    return table
