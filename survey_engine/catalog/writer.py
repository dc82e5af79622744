"""Writing catalogs back to disk as HATS collections, partition by partition.

``write_catalog`` writes a (derived) lazy catalog; the pieces below it (one frame into one
partition file, a collection built beside its final place and renamed in, metadata from the
partitions actually written) also serve other stages' outputs, such as cross-match results.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from survey_engine.catalog import build, layout, storage
from survey_engine.catalog.catalog import Catalog, read_partition
from survey_engine.catalog.healpix import SPATIAL_INDEX_COLUMN
from survey_engine.catalog.lock import output_lock
from survey_engine.catalog.margins import margin_catalog_name
from survey_engine.catalog.owner import Owner, claim, held, release
from survey_engine.errors import UsageError
from survey_engine.runtime import dask_client, run_tasks


def write_frame_partition(
    frame: pd.DataFrame, catalog_dir: str | Path, order: int, pix: int, owner: Owner | None = None
) -> pa.Schema | None:
    """Write a frame indexed by ``_healpix_29`` as one partition file (sorted); None if empty.
    With ``owner``, only while that write still owns its staging folder (``catalog.owner``)."""
    if len(frame) == 0:
        return None
    table = pa.Table.from_pandas(frame.reset_index(), preserve_index=False)
    if SPATIAL_INDEX_COLUMN not in table.column_names:
        raise UsageError(f"a transform dropped the {SPATIAL_INDEX_COLUMN} index; keep it as the frame index")
    table = table.select(
        [SPATIAL_INDEX_COLUMN] + [c for c in table.column_names if c != SPATIAL_INDEX_COLUMN]
    )
    if (
        not frame.index.is_monotonic_increasing
    ):  # cross-match and transform outputs usually are: no sort and copy
        table = build.sort_by_healpix(table)
    build.write_partition_file(table, catalog_dir, order, pix, owner)
    return table.schema


RESUME_FILE = ".resume"  # in OUT.partial: the fingerprint of the write that may resume from it
DONE_DIR = ".done"  # in OUT.partial: one marker per finished task (a partition file, or none: no rows)


@contextmanager
def staged_collection(out: Path, fingerprint: str | None = None) -> Iterator[Path]:
    """Yield a staging folder beside ``out``; rename it to ``out`` only when the block completes.

    With a ``fingerprint`` (what determines the output), a staging folder left by an interrupted
    run with the same fingerprint is kept: its finished partition files (and ``DONE_DIR`` markers)
    let the re-run resume instead of starting over. Without one, or another one, it starts clean.
    The folder is claimed for this write (``catalog.owner.held(staging)`` gives its tasks the claim): a
    task of an earlier write that is still running cannot write into it."""
    out = layout.output_path(out)
    with output_lock(out, f"write {out}"):  # one writer at a time: a second one stops here
        if out.exists() and not out.is_dir():
            raise FileExistsError(f"{out}: exists and is not a folder; choose another output or remove it")
        if out.exists() and any(out.iterdir()):
            raise FileExistsError(
                f"{out}: already exists and is not empty; choose another output or remove it"
            )
        staging = out.with_name(out.name + ".partial")
        marker = staging / RESUME_FILE
        if fingerprint is None or not marker.is_file() or marker.read_text().strip() != fingerprint:
            layout.remove_tree(staging, out.parent)
        staging.mkdir(parents=True, exist_ok=True)
        build.remove_unfinished_files(staging)  # a killed writer's half-written temporaries
        if fingerprint is not None and not marker.is_file():
            layout.atomic_write_text(marker, fingerprint)
        claim(staging)
        yield staging
        release(staging)  # from here a late task of this write is refused too
        build.remove_unfinished_files(staging)  # a lost worker's, whose task ran again elsewhere
        marker.unlink(missing_ok=True)
        layout.remove_tree(staging / DONE_DIR, staging)
        if out.exists():
            out.rmdir()
        staging.rename(out)


def finish_written(
    catalog_dir: Path,
    written: list[tuple[int, int]],
    schemas: list,
    fallback: pa.Schema,
    *,
    name: str,
    product: str,
    ra_column: str,
    dec_column: str,
    extra: dict | None = None,
) -> dict:
    """Catalog metadata for the partitions that got a file (``written``, with their schemas)."""
    schema = next((s for s in schemas if s is not None), None) or fallback
    (catalog_dir / layout.DATASET_DIR).mkdir(parents=True, exist_ok=True)
    return build.finish_catalog(
        catalog_dir,
        name=name,
        product=product,
        orders=np.array([o for o, _ in written], dtype=np.int64),
        pixels=np.array([p for _, p in written], dtype=np.int64),
        schema=schema.remove_metadata(),
        ra_column=ra_column,
        dec_column=dec_column,
        extra_properties=extra,
    )


def finish_collection(staging: Path, name: str, margins: list[str], state: dict) -> None:
    layout.write_collection_properties(staging, name, name, margins)
    layout.atomic_write_text(staging / "survey_engine.json", json.dumps(state))


def _write_one(
    src: str,
    read_columns,
    keep_columns,
    transforms,
    out_dir: str,
    order: int,
    pix: int,
    ra: str,
    dec: str,
    nullable=(),
    expected_rows: int | None = None,
    owner: Owner | None = None,
):
    frame = read_partition(src, read_columns, keep_columns, transforms, nullable, expected_rows=expected_rows)
    if len(frame) == 0:
        return None
    for col in (ra, dec):
        if col not in frame.columns:
            raise UsageError(
                f"cannot write a catalog without its coordinate column {col!r} (columns: {list(frame.columns)})"
            )
    return write_frame_partition(frame, out_dir, order, pix, owner)


def _write_single(
    catalog: Catalog,
    out_dir: Path,
    name: str,
    product: str,
    client,
    progress: bool,
    extra: dict,
    nullable: tuple[str, ...] | None = None,
    owner: Owner | None = None,
) -> int:
    # integer / boolean columns with nulls keep them, with one type in every partition (the
    # margin takes its main catalog's: its rows are some of the main's)
    nullable = catalog.nullable_columns if nullable is None else nullable
    calls = [
        (
            storage.portable(f),
            catalog._read_columns(),
            catalog.columns,
            catalog.transforms,
            str(out_dir),
            int(o),
            int(p),
            catalog.ra_column,
            catalog.dec_column,
            nullable,
            rows,
            owner,
        )
        for f, o, p, rows in zip(
            catalog.partition_files(),
            catalog.partitions.Norder,
            catalog.partitions.Npix,
            catalog._expected_rows(),
        )
    ]
    schemas = run_tasks(client, _write_one, calls, f"write {name}", progress)
    written = [(c[5], c[6]) for c, s in zip(calls, schemas) if s is not None]
    if not written and product == "object":
        raise UsageError(f"nothing to write to {out_dir}: the catalog selection is empty")
    props = finish_written(
        out_dir,
        written,
        schemas,
        catalog.schema,
        name=name,
        product=product,
        ra_column=catalog.ra_column,
        dec_column=catalog.dec_column,
        extra=extra,
    )
    return int(props["hats_nrows"])


def write_catalog(
    catalog: Catalog,
    out: Path,
    name: str | None = None,
    client=None,
    progress: bool = False,
    properties: dict | None = None,
) -> Path:
    """Write ``catalog`` (and its margin) as a collection at ``out``; atomic: built beside, then renamed
    (or, for an ``s3://`` location, built in a local staging folder and uploaded properties last).
    ``properties``: extra keys for the main catalog's hats.properties (how it was made, e.g.
    ``se_variability_spec``), written with the rest."""
    from survey_engine.catalog import storage

    if storage.is_remote(out):
        from survey_engine.catalog.remote_write import write_via_stage

        out = storage.as_path(out)
        name = name if name is not None else out.name
        write_via_stage(
            out,
            lambda stage: write_catalog(
                catalog, stage, name=name, client=client, progress=progress, properties=properties
            ),
        )
        return out
    out = Path(out)
    # a given name is checked; the output folder's own name (made absolute) is one path component
    name = layout.check_name(name, "catalog name") if name is not None else layout.output_path(out).name
    with staged_collection(out) as staging, dask_client(client) as client:
        owner = held(staging)
        rows = _write_single(
            catalog, staging / name, name, "object", client, progress, dict(properties or {}), owner=owner
        )
        margins = []
        if catalog.margin is not None:
            mname = margin_catalog_name(name, catalog.margin_radius_arcsec)
            _write_single(
                catalog.margin,
                staging / mname,
                mname,
                "margin",
                client,
                progress,
                {"hats_primary_table_url": name, "hats_margin_threshold": catalog.margin_radius_arcsec},
                catalog.nullable_columns,
                owner,
            )
            margins.append(mname)
        finish_collection(staging, name, margins, {"rows": rows, "derived_from": str(catalog.path)})
    return out
