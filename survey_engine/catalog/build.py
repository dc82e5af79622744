"""Building a partitioned catalog from streams of rows: split (map) and reduce worker functions.

Split: each input chunk is read in bounded batches; every row gets ``_healpix_29`` and its
destination partition, and rows are appended, grouped by partition, to one Arrow IPC shard file
per chunk (plus one for margin rows). Reduce: each partition memory-maps its slices of every
shard, sorts by ``_healpix_29`` (then id) and writes ``Norder=K/Dir=D/Npix=N.parquet``.
Peak memory is one batch in split and one partition in reduce, whatever the input size.
Every file is written under a temporary name and renamed into place, so a killed run leaves
either a whole file or none; the index file written last is the shard's done-marker.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from survey_engine.catalog import layout
from survey_engine.catalog.healpix import SPATIAL_INDEX_COLUMN, radec_to_healpix
from survey_engine.catalog.layout import partition_path
from survey_engine.catalog.margins import MarginPlan
from survey_engine.catalog.owner import Owner, publish, unique_tmp, write_file
from survey_engine.catalog.owner import check as check_owner
from survey_engine.catalog.partitioning import PartitionPlan

RESERVED_COLUMNS = (SPATIAL_INDEX_COLUMN, "Norder", "Dir", "Npix")


@dataclass(frozen=True)
class SplitSpec:
    """What the split step needs to know, shipped once to every worker."""

    plan: PartitionPlan
    ra_column: str
    dec_column: str
    schema: pa.Schema  # output schema, ``_healpix_29`` first
    margin: MarginPlan | None = None
    write_main: bool = True
    id_column: str | None = None


def save_npz(path: str | Path, **arrays) -> None:
    """``np.savez`` into exactly ``path`` (given a name, ``np.savez`` appends ``.npz`` to it)."""
    with open(path, "wb") as file:
        np.savez(file, **arrays)


@dataclass
class ShardIndex:
    """Which partition each record batch of a shard file belongs to."""

    path: str
    batch_parts: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    batch_rows: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    @property
    def index_path(self) -> str:
        return self.path + ".index.npz"

    def save(self, owner: Owner | None = None) -> None:
        write_file(
            self.index_path, lambda tmp: save_npz(tmp, parts=self.batch_parts, rows=self.batch_rows), owner
        )

    @classmethod
    def load(cls, path: str) -> "ShardIndex | None":
        idx = path + ".index.npz"
        if not os.path.exists(idx) or not os.path.exists(path):
            return None
        data = np.load(idx)
        return cls(path, data["parts"], data["rows"])


def output_schema(input_schema: pa.Schema) -> pa.Schema:
    """Catalog schema: ``_healpix_29`` first, then the input columns (hive columns dropped)."""
    fields = [pa.field(SPATIAL_INDEX_COLUMN, pa.int64())]
    fields += [f for f in input_schema if f.name not in RESERVED_COLUMNS]
    return layout.without_pandas_metadata(pa.schema(fields, metadata=input_schema.metadata))


def prepare_batch(
    batch: pa.Table, spec: SplitSpec, clean: Callable[[pa.Table], pa.Table] | None = None
) -> tuple[pa.Table, np.ndarray]:
    """Add ``_healpix_29`` (first column), cast to the output schema; returns (table, partition idx)."""
    if clean is not None:
        batch = clean(batch)
    ra = batch.column(spec.ra_column).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    dec = batch.column(spec.dec_column).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    hp29 = radec_to_healpix(ra, dec)
    drop = [c for c in RESERVED_COLUMNS if c in batch.column_names]
    if drop:
        batch = batch.drop_columns(drop)
    batch = batch.add_column(0, SPATIAL_INDEX_COLUMN, pa.array(hp29, pa.int64()))
    batch = batch.select(spec.schema.names).cast(spec.schema)
    part = spec.plan.partition_of(hp29)
    return batch, part


def split_batches(
    batches: Iterable[pa.Table],
    spec: SplitSpec,
    main_shard: str | None,
    margin_shard: str | None,
    clean: Callable[[pa.Table], pa.Table] | None = None,
    owner: Owner | None = None,
) -> dict:
    """Write one chunk's rows, grouped by partition, into shard files (only while ``owner``'s write
    owns the staging folder). Returns row counts."""
    main = margin = None
    rows = margin_rows = 0
    try:
        if spec.write_main and main_shard:
            main = _ShardWriter(main_shard, spec.schema, owner)
        if spec.margin is not None and margin_shard:
            margin = _ShardWriter(margin_shard, spec.schema, owner)
        for batch in batches:
            if batch.num_rows == 0:
                continue
            table, part = prepare_batch(batch, spec, clean)
            rows += table.num_rows
            if main is not None:
                main.write_grouped(table, part)
            if margin is not None:
                hp29 = table.column(0).to_numpy()
                ra = (
                    table.column(spec.ra_column).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
                )
                dec = (
                    table.column(spec.dec_column)
                    .to_numpy(zero_copy_only=False)
                    .astype(np.float64, copy=False)
                )
                mrows, mparts = spec.margin.assign(hp29, ra, dec, part)
                if len(mrows):
                    margin.write_grouped(table.take(pa.array(mrows)), mparts)
                    margin_rows += len(mrows)
        for writer in (main, margin):
            if writer is not None:
                writer.close()
    except BaseException:
        for writer in (main, margin):
            if writer is not None:
                writer.abort()  # never raises: the error that stopped the split is the one reported
        raise
    return {"rows": rows, "margin_rows": margin_rows}


class _ShardWriter:
    """Appends partition-grouped record batches to an Arrow IPC file; index saved on close."""

    def __init__(self, path: str, schema: pa.Schema, owner: Owner | None = None):
        check_owner(owner)
        self.owner = owner
        self.index = ShardIndex(path)
        self.tmp = str(unique_tmp(path))
        self.closed = False
        self.sink = pa.OSFile(self.tmp, "wb")
        try:
            self.writer = pa.ipc.new_file(self.sink, schema.remove_metadata())
        except BaseException:
            self.sink.close()
            Path(self.tmp).unlink(missing_ok=True)
            raise
        self.parts: list[int] = []
        self.rows: list[int] = []

    def write_grouped(self, table: pa.Table, part: np.ndarray) -> None:
        order = np.argsort(part, kind="stable")
        sorted_parts = part[order]
        table = table.take(pa.array(order))
        bounds = np.flatnonzero(np.diff(sorted_parts)) + 1
        starts = np.concatenate([[0], bounds])
        stops = np.concatenate([bounds, [len(order)]])
        for lo, hi in zip(starts.tolist(), stops.tolist()):
            for rb in table.slice(lo, hi - lo).to_batches():
                self.writer.write_batch(rb)
                self.parts.append(int(sorted_parts[lo]))
                self.rows.append(rb.num_rows)

    def close(self) -> None:
        self.closed = True
        self.writer.close()
        self.sink.close()
        publish(self.tmp, self.index.path, self.owner)
        self.index.batch_parts = np.array(self.parts, dtype=np.int64)
        self.index.batch_rows = np.array(self.rows, dtype=np.int64)
        self.index.save(self.owner)

    def abort(self) -> None:
        """Drop the unfinished shard: close what is open (once; a failure to close is beside the
        point now) and remove the temporary."""
        closing = [self.sink.close] if self.closed else [self.writer.close, self.sink.close]
        self.closed = True
        for close in closing:  # the sink again even after close() failed half way: it frees the file
            try:
                close()
            except Exception:  # noqa: BLE001 - the shard is dropped whatever happens here
                pass
        try:
            Path(self.tmp).unlink(missing_ok=True)
        except OSError:
            pass  # left for remove_unfinished_files; the error that stopped the split is what counts


def gather_partition_slices(indexes: list[ShardIndex]) -> dict[int, list[tuple[str, list[int]]]]:
    """partition -> [(shard path, batch numbers)] over all shards, in shard order."""
    out: dict[int, list[tuple[str, list[int]]]] = {}
    for idx in indexes:
        if len(idx.batch_parts) == 0:
            continue
        order = np.argsort(idx.batch_parts, kind="stable")
        parts = idx.batch_parts[order]
        bounds = np.flatnonzero(np.diff(parts)) + 1
        for group in np.split(order, bounds):
            out.setdefault(int(idx.batch_parts[group[0]]), []).append((idx.path, group.tolist()))
    return out


def reduce_partition(
    slices: list[tuple[str, list[int]]],
    schema: pa.Schema,
    catalog_dir: str,
    order: int,
    pix: int,
    id_column: str | None = None,
    owner: Owner | None = None,
) -> int:
    """Concatenate a partition's slices, sort by ``_healpix_29`` (then id), write its parquet file."""
    batches = []
    for path, numbers in slices:
        # plain positioned reads of just this partition's batches: a memory map would leave every
        # touched page of every shard resident in the worker, growing with the input
        with pa.OSFile(path, "rb") as source:
            reader = pa.ipc.open_file(source)
            batches.extend(_copy_batch(reader.get_batch(i)) for i in numbers)
    table = (
        pa.Table.from_batches(batches, schema=schema.remove_metadata()) if batches else schema.empty_table()
    )
    table = sort_by_healpix(table, id_column)
    write_partition_file(table.replace_schema_metadata(schema.metadata), catalog_dir, order, pix, owner)
    return table.num_rows


def _copy_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Detach a batch from its reader's buffers so the file can be closed."""
    return pa.RecordBatch.from_arrays([pa.concat_arrays([col]) for col in batch.columns], schema=batch.schema)


def reduce_all(
    client,
    indexes: list[ShardIndex],
    orders: np.ndarray,
    pixels: np.ndarray,
    schema: pa.Schema,
    catalog_dir: Path,
    id_column: str | None,
    desc: str,
    progress: bool,
    only_with_rows: bool = False,
    owner: Owner | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Reduce shards into one file per partition (files already written are kept: resume).

    ``orders``/``pixels`` are the planned partitions, indexed as in the shards. With
    ``only_with_rows`` (margins) partitions without rows get no file. Returns the orders and
    pixels that have files, and the number of rows in the shards.
    """
    from survey_engine.runtime import run_tasks

    slices = gather_partition_slices(indexes)
    parts = sorted(slices) if only_with_rows else list(range(len(orders)))
    calls = []
    for p in parts:
        order, pix = int(orders[p]), int(pixels[p])
        if not partition_path(catalog_dir, order, pix).exists():
            calls.append((slices.get(p, []), schema, str(catalog_dir), order, pix, id_column, owner))
    run_tasks(client, reduce_partition, calls, desc, progress)
    Path(catalog_dir).mkdir(parents=True, exist_ok=True)
    rows = sum(int(r) for idx in indexes for r in idx.batch_rows)
    return np.asarray(orders)[parts], np.asarray(pixels)[parts], rows


def sort_by_healpix(table: pa.Table, id_column: str | None = None) -> pa.Table:
    keys = [(SPATIAL_INDEX_COLUMN, "ascending")]
    if id_column and id_column in table.column_names:
        keys.append((id_column, "ascending"))
    if table.num_rows < 2:
        return table
    return table.take(pc.sort_indices(table, sort_keys=keys))


DICTIONARY_SAMPLE_ROWS = 10_000
# A column whose first DICTIONARY_PROBE_ROWS values are more than DICTIONARY_PROBE_DISTINCT distinct
# is taken as plain without counting the whole sample: at that rate the sample is far more than half
# distinct unless its values come from a pool of ~5,000-7,000 (a dictionary would save little there).
# Counting 10,000 values was 0.4 ms a column, ~12% of writing a 47-column prediction partition.
DICTIONARY_PROBE_ROWS = 1_000
DICTIONARY_PROBE_DISTINCT = 0.9


def dictionary_columns(table: pa.Table, sample_rows: int = DICTIONARY_SAMPLE_ROWS) -> list[str]:
    """The columns worth Parquet's dictionary encoding: text, booleans, and any column whose
    first ``sample_rows`` values repeat (at most half distinct: flags, classes, bands).

    Parquet writers try a dictionary on every column by default and fall back to plain encoding
    when it grows too large; on unique floats and ids that attempt was two thirds of the time of
    writing a cross-match partition (119 ms of 256k rows here, 35 ms without), for no gain.
    Nearly unique columns (floats, ids) are recognised from their first ``DICTIONARY_PROBE_ROWS``."""
    chosen = []
    for name, column in zip(table.column_names, table.columns):
        kind = column.type
        if name == SPATIAL_INDEX_COLUMN:
            continue  # sorted: delta-encoded instead
        if (
            pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
            or pa.types.is_binary(kind)
            or pa.types.is_large_binary(kind)
            or pa.types.is_dictionary(kind)
            or pa.types.is_boolean(kind)
        ):
            chosen.append(name)
            continue
        if not (
            pa.types.is_integer(kind)
            or pa.types.is_floating(kind)
            or pa.types.is_temporal(kind)
            or pa.types.is_decimal(kind)
        ):
            continue  # nested and other types: plain
        probe = column.slice(0, min(DICTIONARY_PROBE_ROWS, sample_rows))
        if len(probe) < sample_rows and pc.count_distinct(probe, mode="all").as_py() > (
            DICTIONARY_PROBE_DISTINCT * len(probe)
        ):
            continue  # nearly every value distinct already: plain
        head = column.slice(0, sample_rows)
        if len(head) and pc.count_distinct(head, mode="all").as_py() <= len(head) // 2:
            chosen.append(name)
    return chosen


UNFINISHED_GLOB = ".*.tmp-*"  # write_partition_file's and atomic_write_text's temporaries


def remove_unfinished_files(folder: str | Path) -> int:
    """Remove the temporaries a killed or failed writer left under ``folder`` (never a finished
    file: those are renamed into place whole); returns how many. Only while holding its lock."""
    removed = 0
    for path in Path(folder).rglob(UNFINISHED_GLOB):
        if path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def write_partition_file(
    table: pa.Table, catalog_dir: str | Path, order: int, pix: int, owner: Owner | None = None
) -> Path:
    """Write one partition atomically, with the sorting column recorded as hats does; with
    ``owner``, only while that write still owns its staging folder (``catalog.owner``).

    Dictionary encoding only where values repeat (``dictionary_columns``), and the sorted
    ``_healpix_29`` delta-encoded (a standard Parquet encoding every reader knows: a sixth
    smaller files on a cross-match result). Every page carries a CRC checksum, which readers
    verify (``integrity.read_checked``): a flipped byte is an error, never different rows."""
    final = partition_path(catalog_dir, order, pix)
    delta = (
        {SPATIAL_INDEX_COLUMN: "DELTA_BINARY_PACKED"}
        if SPATIAL_INDEX_COLUMN in table.column_names
        and pa.types.is_integer(table.schema.field(SPATIAL_INDEX_COLUMN).type)
        else None
    )
    write_file(
        final,
        lambda tmp: pq.write_table(
            table,
            tmp,
            compression="snappy",
            row_group_size=max(table.num_rows, 1),
            sorting_columns=[pq.SortingColumn(0)],
            write_statistics=True,
            use_dictionary=dictionary_columns(table),
            column_encoding=delta,
            write_page_checksum=True,
        ),
        owner,
    )
    return final


def finish_catalog(
    catalog_dir: str | Path,
    *,
    name: str,
    product: str,
    orders: np.ndarray,
    pixels: np.ndarray,
    schema: pa.Schema,
    ra_column: str,
    dec_column: str,
    histogram: tuple[int, np.ndarray, np.ndarray] | None = None,
    extra_properties: dict[str, object] | None = None,
) -> dict[str, object]:
    """Write _metadata, _common_metadata, partition_info.csv, point map and hats.properties.

    ``histogram`` is (order, pixels, counts): the sparse row counts for the point map.
    """
    catalog_dir = Path(catalog_dir)
    (catalog_dir / layout.DATASET_DIR).mkdir(parents=True, exist_ok=True)
    nrows = layout.write_dataset_metadata(catalog_dir, orders, pixels, schema)
    layout.write_partition_info(catalog_dir, orders, pixels)
    extra = dict(extra_properties or {})
    if histogram is not None:  # (order, pixels, counts), sparse
        order, pix, cnt = histogram
        layout.write_point_map(catalog_dir, order=order, pixels=pix, counts=cnt)
        extra.setdefault("hats_skymap_order", int(order))
    return layout.write_catalog_properties(
        catalog_dir,
        name=name,
        product=product,
        nrows=nrows,
        ra_column=ra_column,
        dec_column=dec_column,
        orders=np.asarray(orders),
        extra=extra,
    )
