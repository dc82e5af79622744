"""skew suite: a sparse target list against a dense catalog, and a straggler partition.

*Sparse targets* (LSDB issue #104): a right catalog of ~10^5 partitions (HEALPix order 7 over the six
base pixels 0-5, about 100 rows each: 9.8x10^6 rows, with a margin) against 500,000 targets in a few
hundred fields, and against 500,000 targets spread over the same sky (every partition touched). Each
run records the time to open both catalogs, to plan, and to match (on a LocalCluster, and the same
tasks in one process where every partition file read is counted), and the pairs against one global
cKDTree.

*Straggler*: a left catalog whose one partition holds 10x the rows of each other, matched with its
large partition split into several tasks (``crossmatch.tasks.split_large_tasks``, the default) and
without (``split_rows=0``); same pairs in the same order.

The catalogs are written straight from arrays (a fixed-order partitioning needs no histogram pass):
the dense one takes a few minutes the first time and is kept under the bench's work folder.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from survey_engine.bench.measure import timed

RADIUS_ARCSEC = 2.0  # the match radius; the dense catalog's margin is as wide
DENSE_ORDER, DENSE_BASE_PIXELS, ROWS_PER_PARTITION = 7, 6, 100  # 6 * 4**7 = 98,304 partitions
QUICK_ORDER, QUICK_BASE_PIXELS = 5, 2  # 2 * 4**5 = 2,048 partitions (the tests' and --quick size)
TARGETS, FIELDS, FIELD_RADIUS_DEG = 500_000, 300, 0.3


def dense_rows(
    order: int = DENSE_ORDER,
    base_pixels: int = DENSE_BASE_PIXELS,
    rows_per_partition: int = ROWS_PER_PARTITION,
    seed: int = 3,
) -> pd.DataFrame:
    """The dense catalog's rows (``id``, ``ra``, ``dec``): uniform over the HEALPix base pixels
    ``0 .. base_pixels-1``, ``rows_per_partition`` on average in each of their order-``order``
    pixels. Deterministic: the bench's truth is made from them again, not read back."""
    from survey_engine.catalog.healpix import SPATIAL_INDEX_ORDER, radec_to_healpix

    rng = np.random.default_rng(seed)
    n = base_pixels * 4**order * rows_per_partition
    # uniform on the sphere, keeping the points in the chosen base pixels (a fixed count: draw enough)
    ra, dec = _uniform(rng, int(n * 12 / base_pixels * 1.02) + 1000)
    hp = radec_to_healpix(ra, dec)
    keep = np.flatnonzero((hp >> (2 * SPATIAL_INDEX_ORDER)) < base_pixels)[:n]
    keep = keep[np.argsort(hp[keep], kind="stable")]  # ids in _healpix_29 order
    return pd.DataFrame({"id": np.arange(len(keep), dtype=np.int64), "ra": ra[keep], "dec": dec[keep]})


def dense_catalog(
    out: Path,
    order: int = DENSE_ORDER,
    base_pixels: int = DENSE_BASE_PIXELS,
    rows_per_partition: int = ROWS_PER_PARTITION,
    margin_arcsec: float = RADIUS_ARCSEC,
    seed: int = 3,
) -> Path:
    """The rows of ``dense_rows`` as a collection at ``out`` (made once, then reused): one
    partition per order-``order`` pixel, ``base_pixels * 4**order`` of them, with a margin."""
    if not (out / "collection.properties").exists():
        fixed_order_collection(
            out, dense_rows(order, base_pixels, rows_per_partition, seed), order, margin_arcsec
        )
    return out


def fixed_order_collection(out: Path, frame: pd.DataFrame, order: int, margin_arcsec: float) -> Path:
    """``frame`` (``id``, ``ra``, ``dec``) as a collection at ``out``: one partition per occupied
    HEALPix pixel of ``order`` (a fixed-order partitioning needs no histogram pass, and the many
    small files are written by two processes), with a margin of ``margin_arcsec``. The margin is a
    superset: every row in an order-m pixel (m = the margin order of the radius) next to another
    partition, as hats-import keeps whole border pixels; a match finds the same pairs with it."""
    import shutil

    from survey_engine.catalog import layout
    from survey_engine.catalog.healpix import SPATIAL_INDEX_ORDER, margin_order_for_radius, radec_to_healpix

    ra, dec = frame.ra.to_numpy(float), frame.dec.to_numpy(float)
    hp = radec_to_healpix(ra, dec)
    by_hp = np.argsort(hp, kind="stable")
    hp = hp[by_hp]
    table = pa.table(
        {"_healpix_29": hp, "id": frame.id.to_numpy()[by_hp], "ra": ra[by_hp], "dec": dec[by_hp]}
    )
    name = out.name
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    pix = hp >> (2 * (SPATIAL_INDEX_ORDER - order))
    _write_partitions(staging / name, table, order, pix, name, "object", {})
    rows, owners = _border_rows(hp, order, margin_order_for_radius(margin_arcsec))
    mname = f"{name}_{margin_arcsec:g}arcsec"
    _write_partitions(
        staging / mname,
        table.take(pa.array(rows)),
        order,
        owners,
        mname,
        "margin",
        {"hats_primary_table_url": name, "hats_margin_threshold": float(margin_arcsec)},
    )
    layout.write_collection_properties(staging, name, name, [mname])
    staging.rename(out)
    return out


def target_list(
    right: pd.DataFrame,
    n: int = TARGETS,
    fields: int = FIELDS,
    base_pixels: int = DENSE_BASE_PIXELS,
    field_radius_deg: float = FIELD_RADIUS_DEG,
    seed: int = 5,
) -> pd.DataFrame:
    """``n`` targets (``id``, ``ra``, ``dec``) in ``fields`` round fields of ``field_radius_deg``
    placed at random over the HEALPix base pixels ``0 .. base_pixels-1`` (the dense catalog's sky),
    as a real target list is: in each field the catalog's own rows (``right``: ``ra``, ``dec``)
    moved by 0.3" (they match), then random points up to the field's share. ``fields=0``: the
    ``n`` targets spread uniformly over that sky instead (every partition touched)."""
    from survey_engine.catalog.healpix import SPATIAL_INDEX_ORDER, radec_to_healpix, radec_to_xyz

    rng = np.random.default_rng(seed)

    def inside(ra, dec):
        return (radec_to_healpix(ra, dec) >> (2 * SPATIAL_INDEX_ORDER)) < base_pixels

    if fields == 0:
        ra, dec = _uniform(rng, int(n * 12 / base_pixels * 1.1) + 1000)
        keep = np.flatnonzero(inside(ra, dec))[:n]
        return pd.DataFrame({"id": np.arange(len(keep), dtype=np.int64), "ra": ra[keep], "dec": dec[keep]})
    cra, cdec = _uniform(rng, fields * 12 // base_pixels * 2 + 100)
    ok = np.flatnonzero(inside(cra, cdec))[:fields]
    cra, cdec = cra[ok], cdec[ok]
    by_dec = np.argsort(right.dec.to_numpy(), kind="stable")  # a field looks only at its band of Dec
    sorted_dec = right.dec.to_numpy()[by_dec]
    cos_r = np.cos(np.radians(field_radius_deg))
    jitter = 0.3 / 3600
    ras, decs = [], []
    share = n // len(cra)
    for a, d in zip(cra.tolist(), cdec.tolist()):
        lo, hi = np.searchsorted(sorted_dec, [d - field_radius_deg, d + field_radius_deg])
        band = np.sort(by_dec[lo:hi])
        bxyz = radec_to_xyz(right.ra.to_numpy()[band], right.dec.to_numpy()[band])
        members = band[bxyz @ radec_to_xyz(np.array([a]), np.array([d]))[0] > cos_r][: share // 2]
        mdec = np.clip(right.dec.to_numpy()[members] + rng.normal(0, jitter, len(members)), -90, 90)
        mra = (
            right.ra.to_numpy()[members] + rng.normal(0, jitter, len(members)) / np.cos(np.radians(mdec))
        ) % 360
        # the rest uniform in the field's disc: a direction around the centre and a distance
        k = share - len(members)
        rho = np.radians(field_radius_deg) * np.sqrt(rng.uniform(0, 1, k))
        phi = rng.uniform(0, 2 * np.pi, k)
        d0 = np.radians(d)
        dec2 = np.arcsin(np.sin(d0) * np.cos(rho) + np.cos(d0) * np.sin(rho) * np.cos(phi))
        ra2 = np.radians(a) + np.arctan2(
            np.sin(phi) * np.sin(rho) * np.cos(d0), np.cos(rho) - np.sin(d0) * np.sin(dec2)
        )
        ras += [mra, np.degrees(ra2) % 360]
        decs += [mdec, np.degrees(dec2)]
    ra, dec = np.concatenate(ras), np.concatenate(decs)
    keep = inside(ra, dec)
    ra, dec = ra[keep], dec[keep]
    return pd.DataFrame({"id": np.arange(len(ra), dtype=np.int64), "ra": ra, "dec": dec})


def _uniform(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.uniform(0, 360, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n)))


def _border_rows(hp29: np.ndarray, order: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, partition pixel) for every row whose order-m pixel touches another order-``order``
    pixel (its 8 neighbours' ancestors): a superset of the rows within the radius of that pixel."""
    import cdshealpix

    from survey_engine.catalog.healpix import SPATIAL_INDEX_ORDER

    q = hp29 >> (2 * (SPATIAL_INDEX_ORDER - m))
    own = q >> (2 * (m - order))
    rows_out, parts_out = [], []
    for lo in range(0, len(q), 2_000_000):
        qs = q[lo : lo + 2_000_000]
        nb = cdshealpix.nested.neighbours(qs.astype(np.uint64), m).astype(np.int64)  # (n, 9), -1 missing
        anc = np.where(nb >= 0, nb >> (2 * (m - order)), -1)
        other = (anc >= 0) & (anc != own[lo : lo + 2_000_000, None])
        r, c = np.nonzero(other)
        pairs = np.unique(np.column_stack([anc[r, c], r + lo]), axis=0)  # by partition, then row
        rows_out.append(pairs[:, 1])
        parts_out.append(pairs[:, 0])
    rows, parts = np.concatenate(rows_out), np.concatenate(parts_out)
    order_rows = np.lexsort((hp29[rows], parts))
    return rows[order_rows], parts[order_rows]


_WRITING = None  # what the forked writers write: (catalog_dir, table, order, spans)


def _write_some(which: int) -> None:
    from survey_engine.catalog import build

    catalog_dir, table, order, spans = _WRITING
    for s, e, p in spans[which::2]:
        build.write_partition_file(table.slice(s, e - s), catalog_dir, order, int(p))


def _write_partitions(
    catalog_dir: Path, table: pa.Table, order: int, pix: np.ndarray, name: str, product: str, extra: dict
) -> None:
    """One partition file per distinct value of ``pix`` (rows sorted by it, then ``_healpix_29``),
    then the catalog's metadata."""
    from survey_engine.catalog import build

    bounds = np.flatnonzero(np.diff(pix)) + 1
    starts = np.concatenate([[0], bounds])
    stops = np.concatenate([bounds, [len(pix)]])
    pixels = pix[starts] if len(pix) else np.empty(0, np.int64)
    spans = list(zip(starts.tolist(), stops.tolist(), pixels.tolist()))
    global _WRITING
    _WRITING = (catalog_dir, table, order, spans)
    try:  # two processes (forked: they share the table) write half of the small files each
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(2) as pool:
            pool.map(_write_some, [0, 1])
    finally:
        _WRITING = None
    build.finish_catalog(
        catalog_dir,
        name=name,
        product=product,
        orders=np.full(len(pixels), order, dtype=np.int64),
        pixels=pixels.astype(np.int64),
        schema=table.schema,
        ra_column="ra",
        dec_column="dec",
        extra_properties=extra,
    )


# --- the suite -------------------------------------------------------------------------------


def run(sizes, repeats, workers, work: Path, peer_limits=None) -> list[dict]:
    """Per size n (rows of the dense catalog, ~100 a partition): the sparse and uniform target
    lists against it, then the straggler (a left catalog of 6 partitions, the last with 10x the
    rows of each other) matched with and without splitting."""
    out = []
    for n in sizes:
        order, base = layout_for(n)
        out += _sparse_rows(n, order, base, repeats, workers, work)
        out += _straggler_rows(n, repeats, workers, work)
    return out


def layout_for(n: int) -> tuple[int, int]:
    """(order, number of base pixels) whose pixels hold ``ROWS_PER_PARTITION`` of ``n`` rows on
    average: 9,830,400 rows -> (7, 6), 98,304 partitions; 204,800 -> (5, 2), 2,048."""
    want = max(1.0, n / ROWS_PER_PARTITION)
    best = None
    for order in range(9, -1, -1):
        base = int(min(12, max(1, round(want / 4**order))))
        score = abs(np.log(base * 4**order / want))
        if best is None or score < best[0] - 1e-9:
            best = (score, order, base)
    return best[1], best[2]


def _truth(left: pd.DataFrame, right: pd.DataFrame, radius: float) -> np.ndarray:
    """The nearest right row within ``radius`` of each left row by one global cKDTree, as a pair array."""
    from scipy.spatial import cKDTree

    from survey_engine.bench.suites.common import pair_array
    from survey_engine.catalog.healpix import chord_for, radec_to_xyz

    tree = cKDTree(radec_to_xyz(right.ra.to_numpy(), right.dec.to_numpy()))
    dist, idx = tree.query(
        radec_to_xyz(left.ra.to_numpy(), left.dec.to_numpy()),
        distance_upper_bound=chord_for(radius),
        workers=2,
    )
    ok = np.isfinite(dist)
    return pair_array(left.id.to_numpy()[ok], right.id.to_numpy()[idx[ok]])


def _pairs(frame: pd.DataFrame) -> np.ndarray:
    from survey_engine.bench.suites.common import pair_array

    return pair_array(frame.id_1.to_numpy(), frame.id_2.to_numpy())


def _import_targets(targets: pd.DataFrame, out: Path, client) -> Path:
    from survey_engine.ingest.file_import.arguments import ImportArguments
    from survey_engine.ingest.file_import.run import run_import

    if not out.exists():
        src = out.with_suffix(".parquet")
        targets.to_parquet(src)
        run_import(
            ImportArguments([str(src)], str(out), id_column="id", max_rows=20_000, margin_arcsec=0),
            client=client,
            progress=False,
        )
    return out


def counted_serial_run(result) -> dict:
    """The result's tasks in a plain loop in this process, every partition file they read counted:
    the files opened (left, right, right margin), the CPU seconds, the rows returned."""
    from survey_engine.crossmatch import tasks as xm_tasks

    opened: list[str] = []
    real = xm_tasks.read_partition

    def counting(path, *args, **kwargs):
        opened.append(str(path))
        return real(path, *args, **kwargs)

    xm_tasks.read_partition = counting
    try:
        cpu, t0 = time.process_time(), time.perf_counter()
        result.params.method.prepare()
        rows = sum(len(xm_tasks.match_task(*call)) for call in result.task_calls())
        cpu, wall = time.process_time() - cpu, time.perf_counter() - t0
    finally:
        xm_tasks.read_partition = real
    right, margin = str(result.right.path) + "/", str(result.right.margin.path) + "/"
    return {
        "files_opened": len(opened),
        "files_distinct": len(set(opened)),
        "right_files_opened": len({f for f in opened if f.startswith(right)}),
        "margin_files_opened": len({f for f in opened if f.startswith(margin)}),
        "serial_cpu_s": cpu,
        "serial_wall_s": wall,
        "serial_rows": rows,
    }


def partitions_holding(left, right) -> int:
    """How many right partitions hold at least one left row (what a match must open, at least),
    from the left rows' ``_healpix_29`` and the right partitions' ranges."""
    import pyarrow.parquet as pq

    from survey_engine.catalog.healpix import SPATIAL_INDEX_COLUMN, pixel_range29

    hp29 = np.concatenate(
        [
            pq.read_table(f, columns=[SPATIAL_INDEX_COLUMN]).column(0).to_numpy()
            for f in left.partition_files()
        ]
    )
    start, stop = pixel_range29(right.partitions.Norder.to_numpy(), right.partitions.Npix.to_numpy())
    which = np.searchsorted(np.asarray(stop), hp29, side="right")
    inside = (which < len(start)) & (hp29 >= np.asarray(start)[np.minimum(which, len(start) - 1)])
    return int(len(np.unique(which[inside])))


def _sparse_rows(n: int, order: int, base: int, repeats: int, workers: int, work: Path) -> list[dict]:
    from survey_engine.bench.suites.common import bench_row, local_cluster, repeat_plan
    from survey_engine.catalog.catalog import open_catalog
    from survey_engine.crossmatch.match import crossmatch

    partitions = base * 4**order
    dense = dense_catalog(work / f"skew_dense_o{order}_b{base}", order, base)
    right_rows = dense_rows(order, base)
    big = partitions >= 50_000
    n_targets = TARGETS if big else max(2_000, len(right_rows) // 50)
    out = []
    for variant, fields in (("clustered", FIELDS if big else 6), ("uniform", 0)):
        # the uniform list reads every file of both catalogs (~2x10^5 at full size): one run, and
        # no serial run (the files it needs are counted from its rows)
        serial = variant == "clustered" or not big
        plan = repeat_plan(n_targets, repeats) if serial else {"repeats": 1, "warmup": 0}
        targets = target_list(right_rows, n_targets, fields, base, FIELD_RADIUS_DEG if big else 0.5)
        truth = _truth(targets, right_rows, RADIUS_ARCSEC)
        with local_cluster(workers) as client:
            left_path = _import_targets(targets, work / f"skew_targets_{variant}_o{order}_b{base}", client)
            cpu0, t0 = time.process_time(), time.perf_counter()
            left, right = open_catalog(left_path), open_catalog(dense)
            open_s, open_cpu = time.perf_counter() - t0, time.process_time() - cpu0
            cpu0, t0 = time.process_time(), time.perf_counter()
            result = crossmatch(left, right, RADIUS_ARCSEC)
            plan_s, plan_cpu = time.perf_counter() - t0, time.process_time() - cpu0
            counts = counted_serial_run(result) if serial else {}
            counts["right_partitions_needed"] = partitions_holding(left, right)

            def total():  # open, plan and match, as a user's call would
                return _pairs(
                    crossmatch(open_catalog(left_path), open_catalog(dense), RADIUS_ARCSEC).compute()
                )

            m = timed(total, **plan)
        got = m.pop("value")
        agree = bool(np.array_equal(got, truth))
        case = (
            f"{variant} targets: {len(targets):,} in {fields or 'no'} fields x {len(right_rows):,} rows "
            f"in {partitions:,} partitions"
        )
        out.append(
            bench_row(
                "skew",
                case,
                "survey_engine",
                len(targets),
                workers,
                m,
                agree=agree,
                note="seconds: open + plan + match on the cluster; files counted in a serial run of the same tasks",
                open_s=open_s,
                open_cpu_s=open_cpu,
                plan_s=plan_s,
                plan_cpu_s=plan_cpu,
                tasks=len(result.tasks),
                left_partitions=left.npartitions,
                right_partitions=right.npartitions,
                overlapping_right_partitions=sum(len(t.right) for t in result.tasks),
                pairs=len(got),
                truth_pairs=len(truth),
                **counts,
            )
        )
    return out


def task_cpu_seconds(result) -> list[float]:
    """Each task of ``result`` run in this process, in order: its CPU seconds (the second of two
    runs of the whole list, so that files are cached and the kernel compiled alike for all)."""
    from survey_engine.crossmatch import tasks as xm_tasks

    result.params.method.prepare()
    calls = result.task_calls()
    for call in calls:
        xm_tasks.match_task(*call)
    seconds = []
    for call in calls:
        t0 = time.process_time()
        xm_tasks.match_task(*call)
        seconds.append(time.process_time() - t0)
    return seconds


def list_schedule(seconds: list[float], workers: int) -> float:
    """The time ``workers`` take to run tasks of these durations handed out in order, each to the
    first free worker (as Dask does with tasks of equal priority): the run's length without
    scheduling costs or the machine's load."""
    free = [0.0] * max(1, workers)
    for s in seconds:
        i = free.index(min(free))
        free[i] += s
    return max(free)


def _pixel_points(rng, order: int, pix: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points uniform in the HEALPix pixel (order, pix): order-29 pixels drawn in its range
    (they are of equal area), at their centres."""
    import cdshealpix

    lo = pix << (2 * (29 - order))
    hp = rng.integers(lo, lo + 4 ** (29 - order), n, dtype=np.int64)
    lon, lat = cdshealpix.nested.healpix_to_lonlat(hp.astype(np.uint64), 29)
    return np.asarray(lon.deg, dtype=float), np.asarray(lat.deg, dtype=float)


STRAGGLER_PARTITIONS, STRAGGLER_FACTOR = 6, 10  # the large one: 2/3 of the rows


def straggler_inputs(small_rows: int, seed: int = 9) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A left list in 6 order-3 pixels of base pixel 4, ``small_rows`` in each but the last, which
    holds ten times as many; the right list is every left row moved by 0.3" plus a fifth as many
    random rows in the same pixels."""
    rng = np.random.default_rng(seed)
    ras, decs = [], []
    for j in range(STRAGGLER_PARTITIONS):
        k = small_rows * (STRAGGLER_FACTOR if j == STRAGGLER_PARTITIONS - 1 else 1)
        ra, dec = _pixel_points(rng, 3, 4 * 64 + j, k)
        ras.append(ra)
        decs.append(dec)
    ra, dec = np.concatenate(ras), np.concatenate(decs)
    left = pd.DataFrame({"id": np.arange(len(ra), dtype=np.int64), "ra": ra, "dec": dec})
    sigma = 0.3 / 3600
    rdec = np.clip(dec + rng.normal(0, sigma, len(ra)), -90, 90)
    rra = (ra + rng.normal(0, sigma, len(ra)) / np.cos(np.radians(rdec))) % 360
    extra = len(ra) // 5
    pick = rng.integers(0, STRAGGLER_PARTITIONS, extra)
    era, edec = np.empty(extra), np.empty(extra)
    for j in range(STRAGGLER_PARTITIONS):
        sel = np.flatnonzero(pick == j)
        era[sel], edec[sel] = _pixel_points(rng, 3, 4 * 64 + j, len(sel))
    right = pd.DataFrame(
        {
            "id": np.arange(len(ra) + extra, dtype=np.int64) + 10**10,
            "ra": np.concatenate([rra, era]),
            "dec": np.concatenate([rdec, edec]),
        }
    )
    return left, right


def _straggler_rows(n: int, repeats: int, workers: int, work: Path) -> list[dict]:
    """The straggler matched with its partition split (the default) and whole (``split_rows=0``):
    gathered (``compute``) and written (``write``, as ``crossmatch --out``), runs interleaved; and
    each task's CPU seconds in one process, with the run's length on ``workers`` they imply."""
    import shutil

    from survey_engine.bench.measure import PeakMemory, run_summary
    from survey_engine.bench.suites.common import bench_row, local_cluster, repeat_plan, task_profile
    from survey_engine.catalog.catalog import open_catalog
    from survey_engine.crossmatch.match import crossmatch

    small = int(min(100_000, max(5_000, n // 100)))
    left, right = straggler_inputs(small)
    truth = _truth(left, right, 1.0)
    lpath = work / f"skew_straggler_left_{small}"
    rpath = work / f"skew_straggler_right_{small}"
    if not (lpath / "collection.properties").exists():
        fixed_order_collection(lpath, left, 3, 1.0)
    if not (rpath / "collection.properties").exists():
        fixed_order_collection(rpath, right, 4, 1.0)
    plan = repeat_plan(len(left), repeats)
    labels = ("split", "whole")
    times: dict = {k: [] for k in labels}
    write_times: dict = {k: [] for k in labels}
    first: dict = {}
    peaks: dict = {k: (0, 0) for k in labels}
    profiles: dict = {k: [] for k in labels}
    frames: dict = {}
    with local_cluster(workers) as client:
        lcat, rcat = open_catalog(lpath), open_catalog(rpath)
        results = {k: crossmatch(lcat, rcat, 1.0, split_rows=None if k == "split" else 0) for k in labels}
        # the two runs interleaved (split, whole, split, whole): a ratio must not depend on when
        # the machine was busy
        for i in range(plan["warmup"] + plan["repeats"]):
            for label in labels:
                with PeakMemory() as mem, task_profile(client, profiles[label]):
                    t0 = time.perf_counter()
                    frames[label] = results[label].compute()
                    dt = time.perf_counter() - t0
                first.setdefault(label, dt)
                # and written with --out (the command line's path: the workers write the
                # partitions, the pieces of a split one are joined on the driver)
                target = work / f"skew_straggler_out_{label}"
                shutil.rmtree(target, ignore_errors=True)
                t0 = time.perf_counter()
                results[label].write(target, client=client)
                written = time.perf_counter() - t0
                if i >= plan["warmup"]:
                    times[label].append(dt)
                    write_times[label].append(written)
                    peaks[label] = (max(peaks[label][0], mem.peak), max(peaks[label][1], mem.peak_process))
        written_rows = {
            label: open_catalog(work / f"skew_straggler_out_{label}").row_count() for label in labels
        }
    # the same tasks in one process, each one's CPU seconds: what the machine's load does not change
    cpu = {label: task_cpu_seconds(results[label]) for label in labels}
    out = []
    for label in labels:
        m = run_summary(times[label], first[label], plan["warmup"], *peaks[label])
        out.append(
            bench_row(
                "skew",
                f"straggler: {len(left):,} x {len(right):,}, one of {STRAGGLER_PARTITIONS} left partitions "
                f"with {STRAGGLER_FACTOR}x the rows",
                f"survey_engine ({label})",
                len(left),
                workers,
                m,
                agree=bool(np.array_equal(_pairs(frames[label]), truth))
                and written_rows[label] == len(frames[label]),
                profile=profiles[label],
                tasks=len(results[label].tasks),
                write_s=float(np.median(write_times[label])),
                write_min_s=min(write_times[label]),
                written_rows=written_rows[label],
                task_cpu_s=sum(cpu[label]),
                longest_task_cpu_s=max(cpu[label]),
                makespan_cpu_s=list_schedule(cpu[label], workers),
                left_partitions=lcat.npartitions,
                pairs=len(frames[label]),
                note="split: the large partition as row ranges of its file in several tasks; whole: one task; "
                "runs interleaved",
            )
        )
    same = frames["split"].equals(frames["whole"])
    for row in out:
        row["agree"] = bool(row["agree"] and same)
    return out
