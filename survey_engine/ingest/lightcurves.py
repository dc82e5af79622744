"""Attach a table of detections (time series) to an object catalog as nested per-object light curves.

``survey-engine lightcurves --objects CAT --detections FILES... --out DIR`` writes a HATS catalog
partitioned exactly like the objects, with every object column plus one nested column (``lc`` by
default) holding the object's detections: a struct of equal-length lists (``time``, ``mag``,
``mag_err``, ``band`` and any ``--keep`` columns), sorted by time. That is the layout nested-pandas and
LSDB's nested catalogs use, so ``lsdb.open_catalog(DIR)`` reads ``lc`` as a nested column.

Streaming, memory flat in the number of detections: a map pass reads the detection files in bounded
batches and routes each detection to the partition of its object (looked up by id among the
objects' ids, which are read once: 8 bytes an object), writing one shard per (batch, partition); a
reduce pass builds each partition from its object rows and its shards. Peak memory is one batch plus
one partition's detections. Detections whose id is not an object's are counted and reported (and
refused with ``--require-objects``). Atomic like every output: built in ``DIR.partial`` and renamed.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from survey_engine.arguments import AT_LEAST_1, NAME_LIST, param, positive_int
from survey_engine.catalog import build
from survey_engine.catalog.catalog import open_catalog
from survey_engine.catalog.owner import Owner, held, write_file
from survey_engine.catalog.writer import DONE_DIR, finish_collection, finish_written, staged_collection
from survey_engine.ingest.readers import InputError, expand_inputs, plan_chunks, read_batches
from survey_engine.runtime import dask_client, run_tasks, task_value

SHARDS_DIR = "_detection_shards"


@dataclass
class LightcurveArguments:
    """Arguments of ``survey-engine lightcurves`` (flag = field name with ``-`` for ``_``)."""

    objects: str = param(
        help="object catalog (HATS collection or catalog) with an id column", required=True, ref="catalog"
    )
    detections: list[str] = param(
        help="detection files, folders or globs (CSV, Parquet, FITS, VOTable); in a job: "
        "a files or mock_lightcurves source",
        required=True,
        type=NAME_LIST,
        nargs="+",
        metavar="INPUT",
        ref="source",
    )
    out: str = param(
        help="output collection: the objects plus a nested light-curve column",
        role="output",
        required=True,
        yaml=None,
        job="output",
    )
    id: str = param("object_id", "object id column of the detections (default object_id)")
    object_id: str | None = param(None, "the same id in the objects (default: --id)")
    time: str = param("time", "detection time column, days (default time)")
    mag: str = param("mag", "magnitude (or flux) column (default mag)")
    err: str = param("mag_err", "its error column (default mag_err)")
    band: str | None = param(
        "band",
        "band column; 'none' for single-band detections (default band)",
        convert=lambda b: None if b is None or str(b).lower() == "none" else b,
    )
    keep: list[str] = param(
        help="further detection columns to nest, comma-separated (e.g. flags)",
        type=NAME_LIST,
        default_factory=list,
    )
    lc_column: str = param("lc", "name of the nested light-curve column (default lc)")
    require_objects: bool = param(
        False, "refuse detections whose id is no object's (default: leave them out and count them)", type=bool
    )
    batch_rows: int = param(
        1_000_000,
        "detections read per batch (memory is flat in the number of detections; default 1,000,000)",
        type=int,
        check=AT_LEAST_1,
        parse=positive_int,
    )

    def __post_init__(self) -> None:
        if isinstance(self.detections, str):
            self.detections = [self.detections]
        if isinstance(self.keep, str):
            self.keep = [c.strip() for c in self.keep.split(",") if c.strip()]
        self.object_id = self.object_id or self.id
        if self.batch_rows < 1:
            raise InputError(f"--batch-rows must be at least 1 (got {self.batch_rows})")

    def nested_fields(self) -> list[str]:
        return [c for c in (self.time, self.mag, self.err, self.band, *self.keep) if c]


@dataclass
class LightcurveResult:
    out: Path
    objects: int
    objects_with_detections: int
    detections: int
    unmatched_detections: int
    partitions: int

    def summary(self) -> str:
        return (
            f"{self.detections:,} detections attached to {self.objects_with_detections:,} of {self.objects:,} objects "
            f"in {self.partitions} partitions -> {self.out}"
            + (
                f"; {self.unmatched_detections:,} detections had no object and were left out"
                if self.unmatched_detections
                else ""
            )
        )


def _object_ids(files: list[Path], column: str) -> tuple[np.ndarray, np.ndarray]:
    """Sorted object ids and the partition (position in ``files``) of each; duplicates are an error."""
    ids, parts = [], []
    for i, f in enumerate(files):
        values = pq.read_table(f, columns=[column]).column(0)
        if values.null_count:
            raise InputError(f"{f}: the object id column {column!r} has {values.null_count} empty values")
        ids.append(values.to_numpy())
        parts.append(np.full(len(values), i, dtype=np.int32))
    ids_all = np.concatenate(ids) if ids else np.array([], dtype=np.int64)
    parts_all = np.concatenate(parts) if parts else np.array([], dtype=np.int32)
    order = np.argsort(ids_all, kind="stable")
    ids_all, parts_all = ids_all[order], parts_all[order]
    dup = np.flatnonzero(ids_all[1:] == ids_all[:-1])
    if len(dup):
        raise InputError(
            f"object id {ids_all[dup[0]]!r} appears more than once in the objects ({column!r} must be unique)"
        )
    return ids_all, parts_all


def _map_chunk(
    chunk,
    columns: list[str],
    id_column: str,
    ids: np.ndarray,
    parts: np.ndarray,
    shard_root: str,
    batch_rows: int,
    chunk_index: int,
    owner: Owner | None = None,
) -> tuple[int, int]:
    """Route one input chunk's detections to per-partition shard files; returns (routed, unmatched).
    Each shard file appears whole, and only while ``owner``'s write owns the staging folder; its
    name is the chunk's and the batch's, so a task run again (a lost worker) replaces its own files
    instead of adding a second copy of its detections."""
    routed = unmatched = 0
    for b, batch in enumerate(read_batches(chunk, columns, batch_rows)):
        det_ids = batch.column(id_column).to_numpy(zero_copy_only=False)
        pos = np.searchsorted(ids, det_ids)
        pos_c = np.minimum(pos, max(len(ids) - 1, 0))
        found = (pos < len(ids)) & (ids[pos_c] == det_ids) if len(ids) else np.zeros(len(det_ids), bool)
        unmatched += int((~found).sum())
        part = np.where(found, parts[pos_c], -1)
        order = np.argsort(part, kind="stable")
        part_sorted = part[order]
        bounds = np.flatnonzero(np.diff(part_sorted)) + 1
        starts = np.concatenate([[0], bounds])
        stops = np.concatenate([bounds, [len(part_sorted)]])
        for s, e in zip(starts, stops):
            p = int(part_sorted[s]) if e > s else -1
            if p < 0:
                continue
            piece = batch.take(pa.array(order[s:e]))
            path = Path(shard_root) / f"p{p:07d}" / f"c{chunk_index:07d}-{b:05d}.parquet"
            write_file(path, lambda tmp, piece=piece: pq.write_table(piece, tmp), owner)
            routed += piece.num_rows
    return routed, unmatched


def _nest(object_table: pa.Table, detections: pa.Table, args: LightcurveArguments) -> tuple[pa.Table, int]:
    """Object rows plus the nested light-curve column (struct of lists, each object's rows by time)."""
    obj_ids = object_table.column(args.object_id).to_numpy(zero_copy_only=False)
    n = len(obj_ids)
    fields = args.nested_fields()
    if detections.num_rows:
        det_ids = detections.column(args.id).to_numpy(zero_copy_only=False)
        times = detections.column(args.time).to_numpy(zero_copy_only=False)
        obj_order = np.argsort(obj_ids, kind="stable")
        slot = obj_order[np.searchsorted(obj_ids, det_ids, sorter=obj_order)]
        order = np.lexsort((times, slot))  # by object (in the objects' row order), then time
        slot = slot[order]
        counts = np.bincount(slot, minlength=n)
        detections = detections.take(pa.array(order))
    else:
        counts = np.zeros(n, dtype=np.int64)
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    children = []
    for name in fields:
        col = detections.column(name).combine_chunks() if detections.num_rows else pa.array([], pa.float64())
        children.append(pa.ListArray.from_arrays(offsets, col))
    nested = pa.StructArray.from_arrays(children, names=fields)
    return object_table.append_column(args.lc_column, nested), int((counts > 0).sum())


def _reduce_partition(
    object_file: str,
    shard_dir: str,
    out_dir: str,
    order: int,
    pix: int,
    args: LightcurveArguments,
    owner: Owner | None = None,
) -> tuple[pa.Schema, int, int, int]:
    objects = pq.read_table(object_file)
    shard_dir = Path(shard_dir)
    shards = sorted(shard_dir.glob("*.parquet")) if shard_dir.exists() else []
    detections = (
        pa.concat_tables([pq.read_table(s) for s in shards], promote_options="permissive") if shards else None
    )
    if detections is None:
        empty = {
            c: pa.array([], objects.schema.field(args.object_id).type if c == args.id else pa.float64())
            for c in [args.id, *args.nested_fields()]
        }
        if args.band:
            empty[args.band] = pa.array([], pa.string())
        detections = pa.table(empty)
    table, with_lc = _nest(objects, detections, args)
    build.write_partition_file(table, out_dir, order, pix, owner)
    return table.schema, table.num_rows, with_lc, detections.num_rows


def attach_lightcurves(args: LightcurveArguments, client=None, progress: bool = True) -> LightcurveResult:
    """Build the nested light-curve catalog at ``args.out`` (see the module docstring)."""
    objects = open_catalog(args.objects)
    if (
        objects.margin is not None
    ):  # the objects' own margin rows carry no light curves; nested output has none
        objects = open_catalog(args.objects, margin=None)
    for col in (args.object_id,):
        if col not in objects.schema.names:
            raise InputError(
                f"{args.objects}: no object id column {col!r} (columns: {', '.join(objects.schema.names)})"
            )
    if args.lc_column in objects.schema.names:
        raise InputError(
            f"{args.objects}: already has a column {args.lc_column!r}; choose another --lc-column"
        )
    files = objects.partition_files()
    ids, parts = _object_ids(files, args.object_id)
    det_files = expand_inputs(args.detections)
    chunks = plan_chunks(det_files, chunk_rows=args.batch_rows)
    columns = [args.id, *args.nested_fields()]
    out = Path(args.out)
    name = out.name
    with staged_collection(out) as staging, dask_client(client) as client:
        # under DONE_DIR, which staged_collection removes after giving the folder up: a straggler of
        # this build that made shards/ again after the removal below leaves nothing in the output
        shard_root = staging / DONE_DIR / SHARDS_DIR
        owner = held(staging)
        calls = [
            (chunk, columns, args.id, ids, parts, str(shard_root), args.batch_rows, i, owner)
            for i, chunk in enumerate(chunks)
        ]
        if len(ids) > 1_000_000:  # send the id table to the cluster once, not inside every task
            # made by tasks, not scattered: a killed worker loses neither (see ``task_value``)
            ids_f, parts_f = task_value(client, ids), task_value(client, parts)
            calls = [(c[0], c[1], c[2], ids_f, parts_f, *c[5:]) for c in calls]
        mapped = run_tasks(client, _map_chunk, calls, "route detections", progress)
        unmatched = int(sum(m[1] for m in mapped))
        if unmatched and args.require_objects:
            raise InputError(
                f"{unmatched:,} detections have an {args.id!r} that is no object's in {args.objects} "
                "(without --require-objects they are left out and counted)"
            )
        catalog_dir = staging / name
        reduce_calls = [
            (str(f), str(shard_root / f"p{i:07d}"), str(catalog_dir), int(o), int(p), args, owner)
            for i, (f, o, p) in enumerate(zip(files, objects.partitions.Norder, objects.partitions.Npix))
        ]
        reduced = run_tasks(client, _reduce_partition, reduce_calls, "nest light curves", progress)
        shutil.rmtree(shard_root)
        routed, nested = int(sum(m[0] for m in mapped)), int(sum(r[3] for r in reduced))
        if nested != routed:  # every routed detection nested once: no shard lost, none from elsewhere
            raise RuntimeError(
                f"internal check failed: {routed:,} detections were routed to partitions but {nested:,} "
                f"were nested into {out}"
            )
        written = [(c[3], c[4]) for c in reduce_calls]
        props = finish_written(
            catalog_dir,
            written,
            [r[0] for r in reduced],
            reduced[0][0] if reduced else None,
            name=name,
            product="object",
            ra_column=objects.ra_column,
            dec_column=objects.dec_column,
            extra={"hats_col_nested": args.lc_column},
        )
        detections = nested
        finish_collection(
            staging,
            name,
            [],
            {
                "rows": int(props["hats_nrows"]),
                "detections": detections,
                "objects_from": str(args.objects),
                "lc_column": args.lc_column,
            },
        )
    return LightcurveResult(
        out=out,
        objects=int(sum(r[1] for r in reduced)),
        objects_with_detections=int(sum(r[2] for r in reduced)),
        detections=detections,
        unmatched_detections=unmatched,
        partitions=len(reduced),
    )
