"""``survey-engine verify``: read a whole catalog or collection and say whether it is intact.

Every partition file (and margin partition file) is read in full, so every page's checksum and
every footer is checked; the partitions on disk are compared with ``partition_info.csv``,
``dataset/_metadata``, ``hats_nrows`` and the point map; each margin is recomputed from its main
catalog with the margin code itself (``MarginPlan.assign``), so every margin row must lie within
the radius of its partition's border and outside it, and every row that should be there is
(count and an order-free hash of the rows, per margin partition).

``repair=True`` rebuilds what the partition files determine: ``partition_info.csv``, ``_metadata``
/ ``_common_metadata``, the point map and ``hats_nrows``, and a damaged or incomplete margin
(rebuilt from the main catalog; the old one is kept beside it as ``NAME.damaged``). It never
deletes a data file, and it rebuilds no metadata over a missing or corrupt main partition (that
would turn lost rows into a catalog that looks whole): those need the data restored or re-imported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from survey_engine.catalog import layout
from survey_engine.catalog.healpix import SPATIAL_INDEX_COLUMN, SPATIAL_INDEX_ORDER, pixel_range29
from survey_engine.catalog.integrity import (
    CatalogIntegrityError,
    files_on_disk,
    read_checked,
    read_metadata_facts,
)


@dataclass(frozen=True)
class Problem:
    path: str  # the file (or folder) that is damaged or disagrees
    what: str
    repairable: bool  # rebuilt by ``--repair`` from the partition files


@dataclass
class VerifyReport:
    """What ``verify_catalog`` found (after repairing, when asked): ``ok`` when nothing is damaged."""

    path: Path
    catalogs: list[str] = field(default_factory=list)
    files: int = 0
    rows: int = 0
    margin_rows: int = 0
    problems: list[Problem] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        lines = [
            f"{self.path}: {'OK' if self.ok else 'DAMAGED'}: {len(self.catalogs)} catalog(s) "
            f"({', '.join(self.catalogs)}), {self.files} files read in full, {self.rows:,} rows, {self.margin_rows:,} margin rows"
        ]
        lines += [f"  repaired: {r}" for r in self.repaired]
        lines += [f"  note: {n}" for n in self.notes]
        for p in self.problems:
            fix = (
                "repairable with --repair"
                if p.repairable
                else "not repairable: restore the file or re-import"
            )
            lines.append(f"  DAMAGED {p.path}: {p.what} ({fix})")
        return "\n".join(lines)


# --- one file, read in full (runs on a worker) ----------------------------------------------


def _row_hash(hp29: np.ndarray, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row's position (splitmix64): summed, it identifies a set of rows in any order."""
    with np.errstate(over="ignore"):
        x = hp29.astype(np.uint64) ^ (ra.astype(np.float64).view(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
        x = x ^ (dec.astype(np.float64).view(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F))
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _hash_sum(h: np.ndarray) -> int:
    return int(np.sum(h, dtype=np.uint64)) if len(h) else 0


def _check_file(
    path: str,
    ra: str,
    dec: str,
    order: int,
    pix: int,
    skymap_order: int | None,
    margin_plan,
    own: int,
    margin_of: int | None,
    own_pixel_only: bool = True,
) -> dict:
    """Read one partition file in full; its rows, point-map counts and margin facts.

    ``margin_plan`` (a ``(MarginPlan, PartitionPlan)``) with ``margin_of=None``: this is a main
    partition (index ``own``); return the margin rows it owes every other partition. With
    ``margin_of`` set: this is the margin partition of main partition ``margin_of``; count its
    rows inside that partition and beyond the radius of its border."""
    out: dict = {"path": path, "error": None}
    try:
        table = read_checked(path)
    except CatalogIntegrityError as exc:
        out["error"] = str(exc).split(": ", 1)[1] if str(exc).startswith(path) else str(exc)
        return out
    out["rows"] = table.num_rows
    for name in (SPATIAL_INDEX_COLUMN, ra, dec):
        if name not in table.column_names:
            out["error"] = f"no {name} column"
            return out
    hp = table.column(SPATIAL_INDEX_COLUMN).to_numpy().astype(np.int64)
    ra_v = table.column(ra).to_numpy(zero_copy_only=False).astype(np.float64)
    dec_v = table.column(dec).to_numpy(zero_copy_only=False).astype(np.float64)
    start, stop = (int(v) for v in pixel_range29(order, pix))
    if margin_of is None and own_pixel_only:
        outside = int(np.count_nonzero((hp < start) | (hp >= stop)))
        if outside:
            out["error"] = f"{outside} rows lie outside its pixel (order {order}, pixel {pix})"
        if skymap_order is not None:
            pixels, counts = np.unique(hp >> (2 * (SPATIAL_INDEX_ORDER - skymap_order)), return_counts=True)
            out["skymap"] = (pixels, counts)
    if margin_plan is None:
        return out
    mplan, pplan = margin_plan
    if margin_of is None:
        rows, parts = mplan.assign(hp, ra_v, dec_v, np.full(len(hp), own, dtype=np.int64))
        h = _row_hash(hp[rows], ra_v[rows], dec_v[rows])
        owed = {}
        for part in np.unique(parts).tolist():
            sel = parts == part
            owed[int(part)] = (int(sel.sum()), _hash_sum(h[sel]))
        out["owed"] = owed
    else:
        owner = pplan.partition_of(hp)
        inside = (hp >= start) & (hp < stop)
        out["inside"] = int(np.count_nonzero(inside))
        rest = np.flatnonzero(~inside & (owner >= 0))
        rows, parts = mplan.assign(hp[rest], ra_v[rest], dec_v[rest], owner[rest])
        near = np.zeros(len(hp), dtype=bool)
        near[rest[rows[parts == margin_of]]] = True
        out["beyond"] = int(np.count_nonzero(~near & ~inside))
        out["have"] = (int(len(hp)), _hash_sum(_row_hash(hp, ra_v, dec_v)))
    return out


# --- one catalog's metadata against its files -----------------------------------------------


@dataclass
class _Catalog:
    path: Path
    props: dict
    listed: set  # partition_info.csv (None if unreadable/absent)
    meta_rows: dict | None  # _metadata (None if absent/unreadable)
    disk: dict
    problems: list[Problem]
    derived: bool = False  # a margin: its files can be rebuilt from the main catalog

    @property
    def data_damaged(self) -> bool:
        return any(p.path.endswith(".parquet") for p in self.problems)


def _survey(path: Path, derived: bool = False) -> _Catalog:
    problems: list[Problem] = []
    props: dict = {}
    props_file = path / layout.PROPERTIES_FILE
    if not props_file.exists():
        props_file = path / "properties"
    if props_file.exists():
        props = layout.read_properties(props_file)
    else:
        problems.append(Problem(str(path / layout.PROPERTIES_FILE), "missing", False))
    listed = None
    info = path / layout.PARTITION_INFO_FILE
    if info.exists():
        try:
            import pandas as pd

            df = pd.read_csv(info)
            listed_list = list(zip(df.Norder.astype(int).tolist(), df.Npix.astype(int).tolist()))
            listed = set(listed_list)
            if len(listed) != len(listed_list):
                problems.append(Problem(str(info), "lists a partition more than once", True))
        except Exception as exc:  # any unreadable CSV: rebuilt from the files
            problems.append(Problem(str(info), f"unreadable ({exc})", True))
    meta_rows = None
    try:
        facts = read_metadata_facts(path)
        meta_rows = facts.rows if facts is not None else None
    except CatalogIntegrityError as exc:
        problems.append(
            Problem(str(path / layout.DATASET_DIR / "_metadata"), str(exc).split(": ", 1)[1], True)
        )
    if not (path / layout.DATASET_DIR / "_common_metadata").exists():
        problems.append(Problem(str(path / layout.DATASET_DIR / "_common_metadata"), "missing", True))
    disk = files_on_disk(path)
    cat = _Catalog(path, props, listed, meta_rows, disk, problems, derived)
    # a partition that a metadata file lists but that has no file: lost rows, unless only one
    # of two metadata files lists it (then that file is the one that is wrong)
    named = (listed or set()) | set(meta_rows or {})
    for key in sorted(named - disk.keys()):
        in_info, in_meta = listed is not None and key in listed, meta_rows is not None and key in meta_rows
        file = str(layout.partition_path(path, *key))
        if (in_info or listed is None) and (in_meta or meta_rows is None):
            problems.append(
                Problem(
                    file,
                    "partition file missing (listed in partition_info.csv and dataset/_metadata)",
                    derived,
                )
            )
        elif in_info:
            problems.append(
                Problem(str(info), f"lists {file}, which neither dataset/_metadata nor the disk has", True)
            )
        else:
            problems.append(
                Problem(
                    str(path / layout.DATASET_DIR / "_metadata"),
                    f"lists {file}, which neither partition_info.csv nor the disk has",
                    True,
                )
            )
    for key in sorted(disk.keys()):
        if listed is not None and key not in listed:
            problems.append(Problem(str(info), f"does not list {disk[key]}, which is on disk", True))
        if meta_rows is not None and key not in meta_rows:
            problems.append(
                Problem(
                    str(path / layout.DATASET_DIR / "_metadata"),
                    f"does not list {disk[key]}, which is on disk",
                    True,
                )
            )
    if listed is None and meta_rows is None and disk:
        problems.append(Problem(str(info), "missing (and no dataset/_metadata)", True))
    return cat


def _catalog_dirs(path: Path) -> tuple[Path, list[Path]]:
    """(main catalog, its margin catalogs) for a collection; (catalog, []) for a lone catalog."""
    if (path / layout.COLLECTION_FILE).exists():
        cprops = layout.read_properties(path / layout.COLLECTION_FILE)
        return path / cprops["hats_primary_table_url"], [
            path / m for m in cprops.get("all_margins", "").split()
        ]
    if (path / layout.PROPERTIES_FILE).exists() or (path / "properties").exists():
        return path, []
    raise FileNotFoundError(
        f"{path}: not a HATS catalog or collection (no collection.properties or hats.properties)"
    )


def verify_catalog(
    path: str | Path, repair: bool = False, client=None, progress: bool = False
) -> VerifyReport:
    """Check a whole catalog or collection (every file read in full); with ``repair``, rebuild the
    metadata and margins that the partition files determine, then check again."""
    from survey_engine.runtime import dask_client

    path = Path(path)
    with dask_client(client) as client:
        report = _verify(path, client, progress)
        if not repair or report.ok:
            return report
        repaired = _repair(path, report, client, progress)
        again = _verify(path, client, progress)
        again.repaired = repaired
        return again


def _verify(path: Path, client, progress: bool) -> VerifyReport:
    from survey_engine.catalog.partitioning import PartitionPlan
    from survey_engine.runtime import run_tasks, task_value

    main_dir, margin_dirs = _catalog_dirs(path)
    report = VerifyReport(path, catalogs=[d.name for d in [main_dir, *margin_dirs]])
    main = _survey(main_dir)
    margins = [_survey(d, derived=True) for d in margin_dirs if d.exists()]
    report.problems += main.problems
    report.problems += [
        Problem(str(d), "margin catalog folder missing (named in collection.properties)", True)
        for d in margin_dirs
        if not d.exists()
    ]
    ra, dec = main.props.get("hats_col_ra", "ra"), main.props.get("hats_col_dec", "dec")
    keys = sorted(main.disk, key=lambda k: int(pixel_range29(*k)[0]))
    pplan = PartitionPlan.from_arrays([k[0] for k in keys], [k[1] for k in keys], np.zeros(len(keys)))
    index_of = {(int(o), int(p)): i for i, (o, p) in enumerate(zip(pplan.orders, pplan.pixels))}
    skymap_order = _skymap_order(main_dir, main.props)
    plans = _margin_plans(margins, pplan)
    # each plan travels to the cluster once (tens of MiB for a fine margin order), not pickled into
    # every file's task; made by a task, not scattered, so a killed worker loses none (``task_value``)
    plans = {mpath: task_value(client, plan) for mpath, plan in plans.items()}
    # the main files, read in full; with the first margin's plan, the margin rows each owes the others
    first = next(iter(plans), None)
    is_margin = (
        main.props.get("dataproduct_type") == "margin"
    )  # a margin catalog given on its own: rows lie outside their pixel
    calls = [
        (
            str(main.disk[k]),
            ra,
            dec,
            k[0],
            k[1],
            skymap_order,
            plans.get(first),
            index_of[k],
            None,
            not is_margin,
        )
        for k in keys
    ]
    results = run_tasks(client, _check_file, calls, "verify", progress)
    owed_by_margin = {first: _owed(results)} if first is not None else {}
    for mpath in list(plans)[1:]:  # another margin radius: one more pass over the main rows
        mcalls = [
            (str(main.disk[k]), ra, dec, k[0], k[1], None, plans[mpath], index_of[k], None) for k in keys
        ]
        owed_by_margin[mpath] = _owed(run_tasks(client, _check_file, mcalls, "verify margin", progress))
    report.files += len(results)
    total = _file_problems(main, results, report)
    report.rows = total
    _catalog_totals(main, total, results, skymap_order, report)
    for m in margins:
        _verify_margin(
            m,
            plans.get(m.path),
            index_of,
            (ra, dec),
            main.data_damaged,
            owed_by_margin,
            pplan,
            report,
            client,
            progress,
        )
    return report


def _margin_plans(margins: list, pplan) -> dict:
    """Each margin catalog's plan (which main partitions its rows border), from its threshold; a
    margin without a valid threshold gets a problem and no plan."""
    from survey_engine.catalog.margins import MarginPlan

    plans = {}
    for m in margins:
        try:
            plans[m.path] = (MarginPlan.build(pplan, float(m.props["hats_margin_threshold"])), pplan)
        except (KeyError, ValueError):
            m.problems.append(
                Problem(str(m.path / layout.PROPERTIES_FILE), "no valid hats_margin_threshold", False)
            )
    return plans


def _verify_margin(
    m,
    plan,
    index_of: dict,
    radec: tuple[str, str],
    main_damaged: bool,
    owed_by_margin: dict,
    pplan,
    report,
    client,
    progress: bool,
) -> None:
    """One margin catalog's files read and checked, and its rows compared with those the main
    partitions owe it (skipped, with a note, while the main files are damaged)."""
    from survey_engine.runtime import run_tasks

    report.problems += m.problems
    mkeys = sorted(m.disk)
    mcalls = [
        (str(m.disk[k]), *radec, k[0], k[1], None, plan, index_of.get(k, -1), index_of.get(k, -1))
        for k in mkeys
        if plan is None or k in index_of
    ]
    report.problems += [
        Problem(str(m.disk[k]), "margin partition of a partition the main catalog does not have", True)
        for k in mkeys
        if k not in index_of
    ]
    mresults = run_tasks(client, _check_file, mcalls, "verify margin", progress)
    report.files += len(mresults)
    mtotal = _file_problems(m, mresults, report)
    report.margin_rows += mtotal
    _catalog_totals(m, mtotal, mresults, None, report)
    if plan is not None and main_damaged:
        report.notes.append(
            f"{m.path}: margin rows not compared with the main catalog while its partition files are damaged"
        )
    elif plan is not None:
        _margin_problems(m, mresults, owed_by_margin.get(m.path, {}), pplan, report)


def _owed(results: list[dict]) -> dict:
    """Margin rows (count, hash sum) owed to each partition, summed over the main files."""
    owed: dict = {}
    for r in results:
        for part, (n, h) in (r.get("owed") or {}).items():
            n0, h0 = owed.get(part, (0, 0))
            owed[part] = (n0 + n, (h0 + h) % 2**64)
    return owed


def _skymap_order(catalog_dir: Path, props: dict) -> int | None:
    if "hats_skymap_order" in props:
        return int(props["hats_skymap_order"])
    path = catalog_dir / layout.POINT_MAP_FILE
    if not path.exists():
        return None
    try:
        from astropy.io import fits

        with fits.open(path) as hdul:
            nside = int(hdul[1].header.get("NSIDE", 0))
        return int(np.log2(nside)) if nside else None
    except Exception:  # an unreadable point map is reported by _catalog_totals
        return None


def _file_problems(cat: _Catalog, results: list[dict], report: VerifyReport) -> int:
    """Damaged files, and files whose rows disagree with _metadata; returns the rows read."""
    total = 0
    for r in results:
        key = layout.pixel_from_path(r["path"])
        if r["error"] is not None:
            problem = Problem(r["path"], r["error"], cat.derived)
            cat.problems.append(problem)
            report.problems.append(problem)
            continue
        total += r["rows"]
        if cat.meta_rows is not None and key in cat.meta_rows and cat.meta_rows[key] != r["rows"]:
            problem = Problem(
                str(cat.path / layout.DATASET_DIR / "_metadata"),
                f"says {cat.meta_rows[key]} rows for {r['path']}, which holds {r['rows']}",
                True,
            )
            cat.problems.append(problem)
            report.problems.append(problem)
    return total


def _catalog_totals(
    cat: _Catalog, total: int, results: list[dict], skymap_order: int | None, report: VerifyReport
) -> None:
    """hats_nrows and the point map against the rows actually read."""
    if cat.data_damaged:
        return  # the totals cannot agree while rows are missing; the file problems say why
    stated = cat.props.get("hats_nrows")
    if stated is not None and str(stated) != str(total):
        problem = Problem(
            str(cat.path / layout.PROPERTIES_FILE),
            f"hats_nrows={stated}, but the partition files hold {total} rows",
            True,
        )
        cat.problems.append(problem)
        report.problems.append(problem)
    point_map = cat.path / layout.POINT_MAP_FILE
    if skymap_order is None or not point_map.exists():
        return
    try:
        counts = layout.read_point_map(cat.path)
        stated_map = int(np.sum(counts))
    except Exception as exc:  # any unreadable FITS
        problem = Problem(str(point_map), f"unreadable ({exc})", True)
        cat.problems.append(problem)
        report.problems.append(problem)
        return
    if stated_map != total:
        problem = Problem(
            str(point_map), f"counts {stated_map} rows, but the partition files hold {total}", True
        )
        cat.problems.append(problem)
        report.problems.append(problem)


def _margin_problems(m: _Catalog, results: list[dict], owed: dict, pplan, report: VerifyReport) -> None:
    exact = str(m.props.get("hats_builder", "")).startswith("survey_engine")
    have = {}
    for r in results:
        if r["error"] is not None:
            continue
        key = layout.pixel_from_path(r["path"])
        have[key] = r["have"]
        if r["inside"]:
            report.problems.append(
                Problem(r["path"], f"{r['inside']} margin rows lie inside the partition itself", True)
            )
        if r["beyond"]:
            if exact:
                report.problems.append(
                    Problem(
                        r["path"],
                        f"{r['beyond']} margin rows lie beyond the margin radius of the partition's border",
                        True,
                    )
                )
            else:
                report.notes.append(
                    f"{r['path']}: {r['beyond']} margin rows beyond the radius (margins built from whole "
                    f"border pixels, as hats-import does, are wider than their threshold)"
                )
    damaged = {layout.pixel_from_path(p.path) for p in m.problems if p.path.endswith(".parquet")}
    for part, (n, h) in sorted(owed.items()):
        key = (int(pplan.orders[part]), int(pplan.pixels[part]))
        if key in damaged:
            continue
        got_n, got_h = have.get(key, (0, 0))
        file = layout.partition_path(m.path, *key)
        if (exact and (got_n, got_h) != (n, h)) or got_n < n:
            where = "" if key in have else " (the margin has no file for it)"
            report.problems.append(
                Problem(
                    str(file),
                    f"margin holds {got_n} rows{where}, but {n} rows of other partitions lie "
                    "within the radius of its border" + ("" if got_n != n else " (different rows)"),
                    True,
                )
            )
    for key, (got_n, _) in sorted(have.items()):
        part = int(pplan.partition_of(np.array([pixel_range29(*key)[0]]))[0])
        if exact and part not in owed and got_n:
            report.problems.append(
                Problem(
                    str(m.disk[key]), f"margin holds {got_n} rows, but no row lies within the radius", True
                )
            )


# --- repair -----------------------------------------------------------------------------------


def _repair(path: Path, report: VerifyReport, client, progress: bool) -> list[str]:
    main_dir, margin_dirs = _catalog_dirs(path)
    done: list[str] = []
    main = _survey(main_dir)
    lost = [p for p in report.problems if not p.repairable and Path(p.path).is_relative_to(main_dir)]
    if lost:
        return [
            f"nothing in {main_dir}: a main partition file is missing or damaged ({lost[0].path}); restore it or re-import"
        ]
    if any(Path(p.path).is_relative_to(main_dir) for p in report.problems):
        done += rebuild_metadata(main_dir, main.props)
    for mdir in margin_dirs:
        touched = [p for p in report.problems if Path(p.path).is_relative_to(mdir)]
        if not touched:
            continue
        margin = _survey(mdir, derived=True) if mdir.exists() else None
        if margin is None or any(
            p.path.endswith(".parquet") for p in touched
        ):  # its rows: rebuilt from the main catalog
            done.append(_rebuild_margin(path, mdir, client, progress))
        else:
            done += rebuild_metadata(mdir, margin.props)
    return done


def rebuild_metadata(catalog_dir: Path, props: dict) -> list[str]:
    """Rewrite partition_info.csv, _metadata/_common_metadata, the point map (where the catalog has
    one) and hats_nrows from the partition files on disk; returns what was rebuilt."""
    disk = files_on_disk(catalog_dir)
    keys = sorted(disk, key=lambda k: int(pixel_range29(*k)[0]))
    orders = np.array([k[0] for k in keys], dtype=np.int64)
    pixels = np.array([k[1] for k in keys], dtype=np.int64)
    schema = _schema(catalog_dir, [disk[k] for k in keys])
    total = layout.write_dataset_metadata(catalog_dir, orders, pixels, schema)
    layout.write_partition_info(catalog_dir, orders, pixels)
    done = [
        f"{catalog_dir / layout.PARTITION_INFO_FILE} ({len(keys)} partitions)",
        f"{catalog_dir / layout.DATASET_DIR / '_metadata'} and _common_metadata ({total:,} rows)",
    ]
    order = _skymap_order(catalog_dir, props)
    if (
        order is not None
        and (catalog_dir / layout.POINT_MAP_FILE).exists()
        or props.get("dataproduct_type") == "object"
    ):
        order = order if order is not None else int(orders.max()) if len(orders) else 0
        counts: dict[int, int] = {}
        for k in keys:
            hp = pq.read_table(disk[k], columns=[SPATIAL_INDEX_COLUMN]).column(0).to_numpy()
            pix, cnt = np.unique(hp >> (2 * (SPATIAL_INDEX_ORDER - order)), return_counts=True)
            for p, c in zip(pix.tolist(), cnt.tolist()):
                counts[p] = counts.get(p, 0) + c
        pix = np.array(sorted(counts), dtype=np.int64)
        layout.write_point_map(
            catalog_dir,
            order=order,
            pixels=pix,
            counts=np.array([counts[p] for p in pix.tolist()], dtype=np.int64),
        )
        done.append(f"{catalog_dir / layout.POINT_MAP_FILE} (order {order})")
    if str(props.get("hats_nrows")) != str(total):
        props = dict(props, hats_nrows=total)
        layout.write_properties(catalog_dir / layout.PROPERTIES_FILE, props)
        if (catalog_dir / "properties").exists():
            layout.write_properties(catalog_dir / "properties", props)
        done.append(f"{catalog_dir / layout.PROPERTIES_FILE} (hats_nrows={total})")
    return done


def _schema(catalog_dir: Path, files: list[Path]) -> pa.Schema:
    common = catalog_dir / layout.DATASET_DIR / "_common_metadata"
    try:
        return pq.read_schema(common)
    except (OSError, pa.ArrowException):
        return layout.without_pandas_metadata(pq.read_schema(files[0]))


def _rebuild_margin(collection: Path, margin_dir: Path, client, progress: bool) -> str:
    """Build the margin again from the main catalog; the old folder is kept as ``NAME.damaged``."""
    from survey_engine.catalog.margin_build import build_margin

    cprops = layout.read_properties(collection / layout.COLLECTION_FILE)
    radius = None
    for f in (layout.PROPERTIES_FILE, "properties"):
        if (margin_dir / f).exists():
            radius = float(layout.read_properties(margin_dir / f)["hats_margin_threshold"])
            break
    if radius is None:
        return f"nothing for {margin_dir}: its radius is unknown (no hats.properties); rebuild it with `survey-engine margin`"
    kept = None
    if margin_dir.exists():
        kept = margin_dir.with_name(margin_dir.name + ".damaged")
        n = 1
        while kept.exists():
            kept, n = margin_dir.with_name(f"{margin_dir.name}.damaged{n}"), n + 1
        os.rename(margin_dir, kept)
    built = build_margin(collection, radius, client=client, progress=progress)
    if built != margin_dir:  # named otherwise by its builder: keep the name the collection uses
        os.rename(built, margin_dir)
    layout.write_collection_properties(
        collection,
        cprops.get("obs_collection", collection.name),
        cprops["hats_primary_table_url"],
        cprops.get("all_margins", "").split(),
    )
    return f"{margin_dir} (margin of {radius:g} arcsec rebuilt from the main catalog" + (
        f"; the damaged one kept as {kept})" if kept else ")"
    )
