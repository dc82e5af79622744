"""Writing a cross-match result as a HATS collection partitioned like the left catalog."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from survey_engine.catalog.healpix import pixel_range29
from survey_engine.catalog.owner import Owner, held, write_file
from survey_engine.catalog.writer import (
    DONE_DIR,
    finish_collection,
    finish_written,
    staged_collection,
    write_frame_partition,
)
from survey_engine.crossmatch.algorithms import get_algorithm
from survey_engine.crossmatch.tasks import match_task
from survey_engine.runtime import dask_client, run_tasks


def _match_and_write(task, params, lcoords, rcoords, meta, out_dir: str, done_marker: str, owner: Owner):
    """One left partition's matches written as its partition file, then its done-marker (so a
    re-run after a crash, a full disk or a lost scheduler skips it); both only while ``owner``'s
    write still owns the staging folder (a late task of a failed write must not leave either in the
    next write's folder)."""
    schema = write_frame_partition(
        match_task(task, params, lcoords, rcoords, meta), out_dir, task.left_order, task.left_pix, owner
    )
    write_file(done_marker, lambda tmp: tmp.write_text("written" if schema is not None else "empty"), owner)
    return schema


def _fingerprint(result, name: str, meta) -> str:
    """What determines a written result: the match parameters, the tasks (partition files and their
    rows), the output schema and the two catalogs' metadata files as they are now."""
    from survey_engine.version import __version__

    def stamp(catalog) -> list:
        found = []
        for cat in (catalog, catalog.margin):
            if cat is None:
                continue
            for path in (
                Path(str(cat.path)) / "hats.properties",
                Path(str(cat.path)) / "dataset" / "_metadata",
            ):
                try:
                    st = path.stat()
                    found.append([str(path), st.st_size, st.st_mtime_ns])
                except OSError:
                    found.append([str(path), None])
        return found

    blob = json.dumps(
        [
            __version__,
            name,
            repr(result.params),
            [repr(t) for t in result.tasks],
            str(pa.Schema.from_pandas(meta.reset_index(), preserve_index=False)),
            stamp(result.left),
            stamp(result.right),
        ],
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _done_marker(staging: Path, index: int, task) -> Path:
    return staging / DONE_DIR / f"task-{index:07d}-{task.left_order}-{task.left_pix}"


def _piece_dir(staging: Path, index: int) -> Path:
    """Where task ``index``, a piece of a split left partition, writes its rows (a partition file
    of a catalog of its own) until the pieces are joined into the partition's file."""
    return staging / DONE_DIR / "pieces" / f"task-{index:07d}"


def _task_dirs(result, staging: Path, catalog_dir: Path) -> list[Path]:
    """The folder each task writes its partition file in: the result's catalog, or for a piece
    of a split partition (``tasks.split_large_tasks``) a folder of its own."""
    return [
        _piece_dir(staging, i) if t.row_stop is not None else catalog_dir for i, t in enumerate(result.tasks)
    ]


def _join_pieces(catalog_dir: Path, order: int, pix: int, piece_files: list[Path], marker: Path):
    """One left partition's file from its pieces' files, in row order (each sorted, their
    ``_healpix_29`` ranges in order: the file holds what one task would have written); then its
    marker. Its schema, or None when no piece had rows."""
    from survey_engine.catalog.build import write_partition_file

    tables = [pq.read_table(f) for f in piece_files]
    schema = None
    if tables:
        table = pa.concat_tables(tables)
        write_partition_file(table, catalog_dir, order, pix)
        schema = table.schema
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("written" if schema is not None else "empty")
    return schema


def _match_resumable(client, result, staging: Path, catalog_dir: Path, progress: bool) -> list:
    """Run the match-and-write tasks not already done in ``staging`` (by an interrupted run of the
    same write), then join the pieces of split partitions; the schemas of the result's partitions
    (None where one had no rows), in the order of ``_pixels(result)``."""
    from survey_engine.catalog.build import partition_path

    dirs = _task_dirs(result, staging, catalog_dir)
    calls = [(*call[:-1], str(d)) for call, d in zip(result.task_calls(str(catalog_dir)), dirs)]
    schemas: list = [None] * len(calls)
    todo = []
    for i, (call, task) in enumerate(zip(calls, result.tasks)):
        marker = _done_marker(staging, i, task)
        path = partition_path(dirs[i], task.left_order, task.left_pix)
        if marker.is_file() and marker.read_text() == "empty":
            continue
        if marker.is_file() and path.is_file():
            schemas[i] = pq.read_schema(path)
            continue
        todo.append(i)
    if todo:
        get_algorithm(result.params.algorithm).prepare()  # e.g. compile the kernel once, before the bar
        owner = held(staging)
        done = run_tasks(
            client,
            _match_and_write,
            [(*calls[i], str(_done_marker(staging, i, result.tasks[i])), owner) for i in todo],
            "crossmatch",
            progress,
        )
        for i, schema in zip(todo, done):
            schemas[i] = schema
    return _joined(result, staging, catalog_dir, dirs, schemas)


def _joined(result, staging: Path, catalog_dir: Path, dirs: list[Path], schemas: list) -> list:
    """The schema of each of the result's partitions: a task's own, or for a split partition the
    one of the file its pieces were joined into (joined now unless an earlier run did)."""
    from survey_engine.catalog.build import partition_path

    by_pixel: dict = {}
    for i, task in enumerate(result.tasks):
        by_pixel.setdefault((task.left_order, task.left_pix), []).append(i)
    out = []
    for (order, pix), members in by_pixel.items():
        if len(members) == 1 and result.tasks[members[0]].row_stop is None:
            out.append(schemas[members[0]])
            continue
        marker = staging / DONE_DIR / f"joined-{order}-{pix}"
        path = partition_path(catalog_dir, order, pix)
        if marker.is_file() and (marker.read_text() == "empty" or path.is_file()):
            out.append(pq.read_schema(path) if marker.read_text() == "written" else None)
            continue
        pieces = [partition_path(dirs[i], order, pix) for i in members if schemas[i] is not None]
        out.append(_join_pieces(catalog_dir, order, pix, pieces, marker))
    return out


def _pixels(tasks) -> list[tuple[int, int]]:
    """The result's partitions: the left partitions of the tasks, each once, in task order."""
    return list(dict.fromkeys((t.left_order, t.left_pix) for t in tasks))


def _write_frame_by_partition(frame, tasks, catalog_dir: Path) -> tuple[list, list]:
    """Write an in-memory result (one-to-one, outer) into the left catalog's partitions, plus,
    for right rows outside every left partition (outer joins), pixels of their own."""
    import numpy as np

    from survey_engine.crossmatch.joins import pixels_outside

    index = frame.index.to_numpy()
    pixels = _pixels(tasks)
    extra_o, extra_p = pixels_outside(
        index, np.array([o for o, _ in pixels]), np.array([p for _, p in pixels])
    )
    pixels += list(zip(extra_o.tolist(), extra_p.tolist()))
    schemas = []
    for o, p in pixels:
        start, stop = pixel_range29(o, p)
        schemas.append(write_frame_partition(frame[(index >= start) & (index < stop)], catalog_dir, o, p))
    return pixels, schemas


def write_result(result, out: Path, name: str | None = None, client=None, progress: bool = False) -> Path:
    """Write the matches at ``out``: a local folder (built beside, then renamed) or an ``s3://``
    location (built in a local staging folder, then uploaded with the properties last)."""
    from survey_engine.catalog import storage
    from survey_engine.catalog.layout import check_name, output_path

    if storage.is_remote(out):
        from survey_engine.catalog.remote_write import write_via_stage

        out = storage.as_path(out)
        name = name if name is not None else out.name
        write_via_stage(
            out, lambda stage: write_result(result, stage, name=name, client=client, progress=progress)
        )
        return out

    name = check_name(name, "catalog name") if name is not None else output_path(out).name
    if result.split_rows is None and any(t.row_stop is not None for t in result.tasks):
        # split automatically: the pieces would have to be joined into the partition's one file
        # again (one more read and write of its result), which costs more than the split saves
        # when the match is quick; split_rows=N splits here too
        from dataclasses import replace

        from survey_engine.crossmatch.tasks import whole_tasks

        result = replace(result, tasks=whole_tasks(result.tasks))
    meta = result.meta()
    # a partition-by-partition write resumes from the partitions an interrupted run finished
    fingerprint = None if result.in_memory else _fingerprint(result, name, meta)
    with staged_collection(out, fingerprint) as staging, dask_client(client) as client:
        catalog_dir = staging / name
        if result.in_memory:
            pixels, schemas = _write_frame_by_partition(result.compute(), result.tasks, catalog_dir)
        else:
            schemas = _match_resumable(client, result, staging, catalog_dir, progress)
            pixels = _pixels(result.tasks)
        written = [px for px, s in zip(pixels, schemas) if s is not None]
        props = finish_written(
            catalog_dir,
            written,
            schemas,
            pa.Schema.from_pandas(meta.reset_index(), preserve_index=False),
            name=name,
            product="object",
            ra_column=result.ra_column,
            dec_column=result.dec_column,
            extra={
                "se_crossmatch_radius_arcsec": result.params.radius_arcsec,
                "se_crossmatch_how": result.params.how,
            },
        )
        finish_collection(
            staging,
            name,
            [],
            {
                "rows": int(props["hats_nrows"]),
                "left": str(result.left.path),
                "right": str(result.right.path),
            },
        )
    return Path(out)
