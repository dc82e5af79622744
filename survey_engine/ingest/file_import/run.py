"""Import pipeline: files -> histogram -> partition plan -> split -> reduce -> HATS collection."""

from __future__ import annotations

import errno
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from survey_engine.catalog import build, layout, storage
from survey_engine.catalog.margins import MarginPlan, margin_catalog_name
from survey_engine.catalog.owner import Owner
from survey_engine.catalog.partitioning import plan_partitions_sparse
from survey_engine.ingest.file_import import map_reduce
from survey_engine.ingest.file_import.arguments import ImportArguments
from survey_engine.ingest.file_import.map_reduce import RENAMED_SUFFIX
from survey_engine.ingest.file_import.resume_plan import ResumePlan
from survey_engine.ingest.readers import InputError, plan_chunks
from survey_engine.runtime import dask_client, run_tasks, task_value

STATE_FILE = "survey_engine.json"


@dataclass
class ImportResult:
    out: Path
    rows: int = 0
    partitions: int = 0
    margin_rows: int = 0
    dropped: int = 0
    wrapped_ra: int = 0
    up_to_date: bool = False
    resumed: bool = False
    catalog_dir: Path | None = None
    margin_dir: Path | None = None
    skipped: list[str] = field(default_factory=list)  # notes on input files without rows
    renamed: list[str] = field(default_factory=list)  # reserved column names renamed to <name>_input
    removed_partial: bool = False

    def summary(self) -> str:
        if self.up_to_date:
            removed = (
                f"; removed the leftover {self.out}.partial of an interrupted run"
                if self.removed_partial
                else ""
            )
            return f"{self.out}: already up to date ({self.rows} rows), nothing to do{removed}"
        parts = [f"{self.rows} rows in {self.partitions} partitions -> {self.out}"]
        if self.margin_dir is not None:
            parts.append(f"margin: {self.margin_rows} rows")
        if self.dropped:
            parts.append(f"dropped {self.dropped} rows with invalid coordinates")
        if self.wrapped_ra:
            parts.append(f"wrapped {self.wrapped_ra} RA values into [0, 360)")
        if self.resumed:
            parts.append("resumed from an earlier interrupted run")
        if self.renamed:
            parts.append(
                "renamed input columns reserved by HATS: "
                + ", ".join(f"{n} -> {n}{RENAMED_SUFFIX}" for n in self.renamed)
            )
        if self.skipped:
            parts.append(f"skipped {len(self.skipped)} file(s) without rows: " + "; ".join(self.skipped))
        return "; ".join(parts)


def check_output(out: Path, fingerprint: str) -> dict | None:
    """The state of an existing output: None if free; its state if it is this very import."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    if not any(out.iterdir()):
        return None
    state_file = out / STATE_FILE
    if state_file.exists():
        state = json.loads(state_file.read_text())
        if state.get("fingerprint") == fingerprint:
            return state
        raise InputError(
            f"{out}: already holds a different catalog (built from other inputs or parameters); choose another --out or remove it"
        )
    what = (
        "a catalog"
        if (out / layout.PROPERTIES_FILE).exists() or (out / layout.COLLECTION_FILE).exists()
        else "other files"
    )
    raise InputError(f"{out}: already holds {what}; choose another --out or remove it")


def run_import(args: ImportArguments, client=None, progress: bool = True) -> ImportResult:
    """Import the files named by ``args`` into a HATS collection at ``args.out`` (resumable); an
    ``s3://`` output is built in a local staging folder and uploaded with its properties last."""
    from survey_engine.catalog.lock import output_lock

    if storage.is_remote(args.out):
        return _import_remote(args, client, progress)
    out = Path(args.out)
    layout.output_path(out)
    with output_lock(out, f"import {' '.join(args.inputs)} --out {args.out}"):
        return _import_locked(args, out, client, progress)


def _import_remote(args: ImportArguments, client, progress: bool) -> ImportResult:
    """Import into a local staging folder (resumable there), then upload it to the remote ``--out``
    so that readers never see it half-written (``catalog.remote_write``)."""
    from dataclasses import replace

    from survey_engine.catalog import remote_write

    out = storage.as_path(args.out)
    remote_write.check_writable(out)
    fingerprint = args.fingerprint()
    state = remote_write.remote_state(out)
    if state is not None:
        if state.get("fingerprint") == fingerprint:
            return ImportResult(out=out, rows=state["rows"], partitions=state["partitions"], up_to_date=True)
        raise InputError(
            f"{storage.display(out)}: already holds a different catalog (built from other inputs or parameters); "
            "choose another --out or remove it"
        )
    stage = remote_write.local_stage(out)
    stage.parent.mkdir(parents=True, exist_ok=True)
    result = run_import(replace(args, out=str(stage)), client=client, progress=progress)
    remote_write.publish(stage, out, fingerprint)
    layout.remove_tree(stage, stage.parent)
    if result.up_to_date:  # built by an earlier run whose upload was interrupted
        result.up_to_date, result.resumed = False, True
    result.out, result.catalog_dir = out, out / args.name
    result.margin_dir = out / result.margin_dir.name if result.margin_dir is not None else None
    return result


def _import_locked(args: ImportArguments, out: Path, client, progress: bool) -> ImportResult:
    fingerprint = args.fingerprint()
    state = check_output(out, fingerprint)
    if state is not None:
        # a run killed between publishing OUT and removing its staging folder left OUT.partial behind
        leftover = args.staging.exists()
        layout.remove_tree(args.staging, out.parent)
        return ImportResult(
            out=out,
            rows=state["rows"],
            partitions=state["partitions"],
            up_to_date=True,
            removed_partial=leftover,
        )
    try:
        return _run_import(args, out, fingerprint, client, progress)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise InputError(
                f"{exc.filename or args.staging}: no space left on device while writing {out}; free some space and run "
                "the same command again: it resumes where it stopped"
            ) from None
        raise


def _run_import(args: ImportArguments, out: Path, fingerprint: str, client, progress: bool) -> ImportResult:
    resume = ResumePlan(args.staging, fingerprint)
    with resume.discarded_if_nothing_done():
        chunks = plan_chunks(args.files, args.chunk_rows)
    with dask_client(client) as client, resume.discarded_if_nothing_done():
        histogram, stats, schema, inputs = _histograms(client, args, chunks, resume, progress)
        rows, dropped, wrapped = (int(x) for x in stats)
        if rows == 0:
            notes = f" ({'; '.join(inputs.skipped)})" if inputs.skipped else ""
            raise InputError(
                f"{', '.join(args.files[:3])}: no rows to import"
                + (f" ({dropped} dropped as invalid)" if dropped else "")
                + notes
            )
        schema = promote_coordinates(schema, args.ra_column, args.dec_column)
        plan = plan_partitions_sparse(histogram[1], histogram[2], args.highest_order, args.max_rows)
        margin = MarginPlan.build(plan, args.margin_arcsec) if args.margin_arcsec else None
        spec = build.SplitSpec(
            plan, args.ra_column, args.dec_column, build.output_schema(schema), margin, True, args.id_column
        )
        main_idx, margin_idx = _split(client, args, chunks, spec, resume, progress, inputs.empty)
        collection = resume.collection_dir
        main_dir = collection / args.name
        _, _, main_rows = build.reduce_all(
            client,
            main_idx,
            plan.orders,
            plan.pixels,
            spec.schema,
            main_dir,
            spec.id_column,
            "reduce",
            progress,
            owner=resume.owner,
        )
        if main_rows != rows:
            raise RuntimeError(
                f"internal check failed: histogram counted {rows} rows but {main_rows} were written"
            )
        result = ImportResult(
            out=out,
            rows=rows,
            partitions=len(plan),
            dropped=dropped,
            wrapped_ra=wrapped,
            resumed=resume.resumed,
            skipped=inputs.skipped,
            renamed=inputs.renamed,
        )
        props_extra = {"hats_max_rows": args.max_rows}
        if args.id_column:
            props_extra["se_col_id"] = args.id_column
        build.finish_catalog(
            main_dir,
            name=args.name,
            product="object",
            orders=plan.orders,
            pixels=plan.pixels,
            schema=spec.schema,
            ra_column=args.ra_column,
            dec_column=args.dec_column,
            histogram=histogram,
            extra_properties=props_extra,
        )
        margins = []
        if margin is not None:
            mname, result.margin_rows = _reduce_margin(
                client, args, margin, margin_idx, spec, collection, progress, resume.owner
            )
            margins.append(mname)
            result.margin_dir = out / mname
        layout.write_collection_properties(collection, args.name, args.name, margins)
        state = {
            "fingerprint": fingerprint,
            "rows": rows,
            "partitions": len(plan),
            "margin_rows": result.margin_rows,
            "dropped": dropped,
            "wrapped_ra": wrapped,
            "inputs": args.files,
        }
        layout.atomic_write_text(collection / STATE_FILE, json.dumps(state, indent=1))
    resume.publish(out)
    result.catalog_dir = out / args.name
    return result


def _reduce_margin(
    client, args: ImportArguments, margin, margin_idx, spec, collection: Path, progress: bool, owner: Owner
):
    """The margin catalog beside the main one: its partitions reduced from the split's margin rows
    (only those with rows written) and its properties; its name and rows."""
    mname = margin_catalog_name(args.name, args.margin_arcsec)
    m_orders, m_pixels, margin_rows = build.reduce_all(
        client,
        margin_idx,
        margin.part_orders,
        margin.part_pixels,
        spec.schema,
        collection / mname,
        spec.id_column,
        "margin",
        progress,
        only_with_rows=True,
        owner=owner,
    )
    build.finish_catalog(
        collection / mname,
        name=mname,
        product="margin",
        orders=m_orders,
        pixels=m_pixels,
        schema=spec.schema,
        ra_column=args.ra_column,
        dec_column=args.dec_column,
        extra_properties={
            "hats_primary_table_url": args.name,
            "hats_margin_threshold": float(args.margin_arcsec),
        },
    )
    return mname, margin_rows


@dataclass
class _InputNotes:
    empty: set[int] = field(default_factory=set)  # chunks without rows
    skipped: list[str] = field(default_factory=list)
    renamed: list[str] = field(default_factory=list)


def _histograms(client, args, chunks, resume, progress):
    todo = [i for i in range(len(chunks)) if resume.load_histogram(i) is None]
    calls = [
        (
            chunks[i],
            args.ra_column,
            args.dec_column,
            args.highest_order,
            args.drop_invalid,
            args.id_column,
            str(resume.histogram_path(i)),
            resume.owner,
        )
        for i in todo
    ]
    run_tasks(client, _histogram_task, calls, "histogram", progress)
    # one fixed-size dense accumulator (chunk histograms arrive one at a time), then only the
    # occupied pixels go on to planning and the point map
    dense = np.zeros(12 * 4**args.highest_order, dtype=np.int64)
    stats = np.zeros(3, dtype=np.int64)
    schemas = []
    notes = _InputNotes()
    for i, chunk in enumerate(chunks):
        h = resume.load_histogram(i)
        dense[h["pixels"]] += h["counts"]  # pixels are unique within a chunk
        stats += h["stats"]
        if "empty" in h and bool(h["empty"][0]):
            notes.empty.add(i)
            notes.skipped.append(h["note"].tobytes().decode())
            continue
        for name in h["renamed"].tobytes().decode().split(",") if "renamed" in h else []:
            if name and name not in notes.renamed:
                notes.renamed.append(name)
        schemas.append((chunk, pa.ipc.read_schema(pa.py_buffer(h["schema"].tobytes()))))
    pixels = np.flatnonzero(dense)
    counts = dense[pixels]
    del dense
    if not schemas:
        raise InputError(f"{', '.join(args.files[:3])}: no rows to import ({'; '.join(notes.skipped)})")
    return (args.highest_order, pixels, counts), stats, unify_schemas(schemas), notes


def _histogram_task(chunk, ra, dec, order, drop_invalid, id_column, out_path, owner):
    map_reduce.histogram_chunk(chunk, ra, dec, order, drop_invalid, id_column, out_path, owner)
    return True


def unify_schemas(schemas: list) -> pa.Schema:
    """One schema for all input files: [(chunk, schema)] with the same column names; a column's
    types are unified where that loses nothing (null + any type, narrower + wider integers of
    one signedness, unsigned + wider signed, float32 + float64, integers of up to 32 bits +
    float64; a CSV's inferred int64 + double, since a CSV declares no types), else refused
    naming both files and the column."""
    base_chunk, base = schemas[0]
    names = set(base.names)
    for chunk, schema in schemas[1:]:
        if set(schema.names) != names:
            extra = sorted(set(schema.names) - names)
            missing = sorted(names - set(schema.names))
            raise InputError(
                f"{chunk.path}: columns differ from {base_chunk.path} (extra: {extra}, missing: {missing})"
            )
    fields = []
    for f in base:
        typ, src = f.type, base_chunk
        for chunk, schema in schemas[1:]:
            other = schema.field(f.name).type
            wider = _lossless_common_type(typ, other, csv=src.fmt == "csv" or chunk.fmt == "csv")
            if wider is None:
                raise InputError(
                    f"{chunk.path}: column {f.name!r} is {other} but {typ} in {src.path}; the types cannot be unified without "
                    "losing values: convert one of the files"
                )
            if wider != typ:
                typ, src = wider, chunk
        fields.append(f.with_type(typ))
    return pa.schema(fields, metadata=base.metadata)


def _lossless_common_type(a: pa.DataType, b: pa.DataType, csv: bool) -> pa.DataType | None:
    if a == b:
        return a
    if pa.types.is_null(a):
        return b
    if pa.types.is_null(b):
        return a
    for x, y in ((a, b), (b, a)):
        if pa.types.is_integer(x) and pa.types.is_integer(y):
            if pa.types.is_signed_integer(x) == pa.types.is_signed_integer(y):
                return x if x.bit_width >= y.bit_width else y
            if (
                pa.types.is_signed_integer(x) and x.bit_width > y.bit_width
            ):  # unsigned y fits in wider signed x
                return x
        if pa.types.is_floating(x) and pa.types.is_floating(y):
            return x if x.bit_width >= y.bit_width else y
        if (
            pa.types.is_floating(x)
            and x.bit_width == 64
            and pa.types.is_integer(y)
            and (y.bit_width <= 32 or csv)
        ):
            return x
        if pa.types.is_large_string(x) and pa.types.is_string(y):
            return x
    return None


def promote_coordinates(schema: pa.Schema, ra: str, dec: str) -> pa.Schema:
    """RA/Dec stored as float64 where the input had narrower floats: RA is wrapped in float64
    (a float32 RA of -1e-6 would round to 360.0) and positions keep their precision."""
    for name in (ra, dec):
        if name in schema.names:
            i = schema.get_field_index(name)
            f = schema.field(i)
            if pa.types.is_floating(f.type) and f.type.bit_width < 64:
                schema = schema.set(i, f.with_type(pa.float64()))
    return schema


def _split(client, args, chunks, spec, resume, progress, empty: set[int]):
    def load(i):
        main = build.ShardIndex.load(resume.main_shard(i))
        margin = build.ShardIndex.load(resume.margin_shard(i)) if spec.margin else None
        return main, margin

    nonempty = [i for i in range(len(chunks)) if i not in empty]
    loaded = {i: load(i) for i in nonempty}
    todo = [
        i
        for i, (main, margin) in loaded.items()
        if main is None or (spec.margin is not None and margin is None)
    ]
    if todo:
        # made by a task, not scattered: it survives a killed worker (see ``task_value``)
        spec_future = task_value(client, spec)
        calls = [
            (
                chunks[i],
                spec_future,
                args.drop_invalid,
                resume.main_shard(i),
                resume.margin_shard(i),
                resume.owner,
            )
            for i in todo
        ]
        run_tasks(client, map_reduce.split_chunk, calls, "split", progress)
        for i in todo:
            loaded[i] = load(i)
    return [m for m, _ in loaded.values()], ([g for _, g in loaded.values()] if spec.margin else [])
