"""Training rows made ready on the cluster: features computed, target or class index, spatial
fold and calibration flag per row, persisted where training wants each partition, and the
checks that stop a run early with a message naming the column (leaking features, one class,
a feature missing everywhere)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from survey_engine.catalog.row_filter import RowFilterError, check_where
from survey_engine.features.spec import FeatureError, FeatureSpec
from survey_engine.ml.dask_xgboost import placed
from survey_engine.ml.data import Table, assign_folds, healpix_of, placed_rows
from survey_engine.ml.options import (
    CALIBRATION_FRACTION,
    CALIBRATION_SEED,
    FOLD_DENSE_PIXELS,
    FOLD_MIN_PIXELS,
    FOLD_ORDERS,
    SPECTROSCOPIC_COLUMNS,
    TrainingError,
    TrainOptions,
)


def prepare_partition(
    frame: pd.DataFrame,
    spec: FeatureSpec,
    task: str,
    truth: str,
    classes: list[str] | None,
    folds: int,
    seed: int,
    ra: str | None,
    dec: str | None,
    where: str | None = None,
    partition_info=None,
    magnitude: str | None = None,
    attempt: int = 0,
    order: int = 7,
    cv: int = 0,
) -> pd.DataFrame:
    """``attempt`` only names the tasks: a retry's are apart from a failed attempt's; ``order`` is
    the HEALPix order of the spatial folds (``fold_order``)."""
    number = partition_info["number"] if partition_info else 0
    if where:
        frame = frame.query(where)
    feats = spec.compute(frame)
    y = _truth_values(frame, task, truth, classes)
    feats["_y"] = y
    feats["_fold"] = assign_folds(frame, folds, seed, ra, dec, number, order)
    if cv:  # --cv K's own folds, by the same hash (K = folds: the same folds)
        feats["_cvfold"] = assign_folds(frame, cv, seed, ra, dec, number, order)
    # calibration rows (photo-z intervals): by sky pixel as the folds, independent of them
    feats["_cal"] = assign_folds(frame, 100, seed + CALIBRATION_SEED, ra, dec, number, order) < round(
        100 * CALIBRATION_FRACTION
    )
    if magnitude:
        feats["_mag"] = pd.to_numeric(frame[magnitude], errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan
        )
    feats = feats[np.isfinite(y)]
    if spec.missing == "drop":
        feats = feats.dropna(subset=list(spec.features))
    return feats


def prepare_table(
    table: Table, opts: TrainOptions, client, attempt: int = 0
) -> tuple[object, FeatureSpec, list[str] | None, dict]:
    """Features + target + fold of every labelled row, persisted on the cluster."""
    spec = FeatureSpec(
        opts.features,
        ebv_column=opts.ebv_column,
        missing=opts.missing,
        ra_column=opts.ra_column or "ra",
        dec_column=opts.dec_column or "dec",
        text_as_missing=opts.text_as_missing,
    )
    _check_inputs(table, opts, spec)
    ra, dec = table_positions(table, opts)
    if opts.where:  # before the first read of the rows it selects
        try:
            check_where(table.frame._meta_nonempty, opts.where)
        except RowFilterError as exc:
            raise TrainingError(f"{table.path}: {exc}") from None
    classes = _label_classes(table, opts) if opts.task == "classify" else None
    magnitude = magnitude_column(opts, spec, table)
    order, filled = fold_order(table, opts, spec, ra, dec, classes, client) if ra else (None, 0.0)
    if order is None:  # too small a patch of sky for spatial folds: by row
        ra = dec = None
    lenient = replace(spec, text_as_missing=True)  # the placeholder rows Dask makes up hold text ("foo")
    meta = prepare_partition(
        table.frame._meta_nonempty.head(2),
        lenient,
        opts.task,
        opts.truth,
        classes or ["x"],
        opts.folds,
        opts.seed,
        ra,
        dec,
        magnitude=magnitude,
        order=order or 7,
        cv=opts.cv,
    )
    prepared = table.frame.map_partitions(
        prepare_partition,
        spec,
        opts.task,
        opts.truth,
        classes,
        opts.folds,
        opts.seed,
        ra,
        dec,
        opts.where,
        meta=meta.iloc[:0],
        align_dataframes=False,
        magnitude=magnitude,
        attempt=attempt,
        order=order or 7,
        cv=opts.cv,
    )
    prepared = placed(client, prepared)  # persisted where training wants each partition: no moves later
    n = int(prepared.shape[0].compute())
    if n < max(opts.folds, opts.cv):
        raise TrainingError(
            f"{table.path}: only {n} labelled rows, fewer than the {max(opts.folds, opts.cv)} folds"
        )
    present = prepared[list(spec.features)].count().compute()
    empty = [c for c in spec.features if present[c] == 0]
    if empty:
        raise TrainingError(
            f"{table.path}: feature(s) {empty} are missing (NaN or a sentinel) in every labelled row"
        )
    info = {
        "rows": n,
        "positions": bool(ra) or filled > 0,
        "fold_kind": (
            f"spatial (HEALPix order {order})"
            if ra
            else f"random (by row): the labelled rows are too crowded, as if in {filled:.0f} equally filled "
            f"HEALPix pixels at order {FOLD_ORDERS[-1]} (fewer than {FOLD_MIN_PIXELS})"
            if filled
            else "random (by row)"
        ),
        "magnitude_column": magnitude,
        "feature_inputs": spec.inputs_by_feature(table.columns),
    }
    return prepared, spec, classes, info


def _truth_values(frame: pd.DataFrame, task: str, truth: str, classes: list[str] | None) -> np.ndarray:
    """The target (photo-z) or class index (classify) of every row; NaN where a row has none."""
    if task == "photoz":
        return pd.to_numeric(frame[truth], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    labels = frame[truth].astype("string").str.strip()
    return labels.map({c: i for i, c in enumerate(classes)}).astype("float64").to_numpy(na_value=np.nan)


def _pixel_counts(
    frame: pd.DataFrame,
    ra: str,
    dec: str,
    task: str,
    truth: str,
    classes: list[str] | None,
    where: str | None,
    order: int,
    dropping: FeatureSpec | None = None,
    within: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Labelled rows (as ``prepare_partition`` keeps them; ``dropping``: the spec of --missing drop)
    per HEALPix pixel at ``order`` in one partition, and how many have no position (split by row);
    ``within``: only the rows in these pixels of the coarsest fold order."""
    if where:
        frame = frame.query(where)
    kept = np.isfinite(_truth_values(frame, task, truth, classes))
    if dropping is not None:
        kept &= dropping.compute(frame)[list(dropping.features)].notna().all(axis=1).to_numpy()
    placed = placed_rows(frame, ra, dec)
    unplaced = int((kept & ~placed).sum())
    pixel = healpix_of(frame[kept & placed], ra, dec, order)
    if within is not None:
        pixel = pixel[np.isin(pixel >> np.uint64(2 * (order - FOLD_ORDERS[0])), within)]
        unplaced = 0
    pixels, rows = np.unique(pixel, return_counts=True)
    return pixels, rows, unplaced


def effective_pixels(counts: np.ndarray) -> float:
    """(sum n)^2 / sum n^2: how many equally filled pixels would hold the rows, so that a few dense
    pixels (a deep field inside a sparse survey) do not count as many."""
    counts = np.asarray(counts, dtype=np.float64)
    return float(counts.sum() ** 2 / (counts**2).sum()) if counts.sum() else 0.0


def _merged(found: list[tuple[np.ndarray, np.ndarray, int]]) -> tuple[np.ndarray, np.ndarray]:
    """The partitions' counts added up per pixel; rows without a position are cells of one row."""
    pixel = np.concatenate([np.zeros(0, np.uint64), *(p.astype(np.uint64) for p, _, _ in found)])
    rows = np.concatenate([np.zeros(0, np.int64), *(n for _, n, _ in found)])
    unique, index = np.unique(pixel, return_inverse=True)
    unplaced = sum(u for _, _, u in found)
    return unique, np.concatenate(
        [np.bincount(index, weights=rows, minlength=len(unique)), np.ones(unplaced)]
    )


def fold_order(
    table: Table, opts: TrainOptions, spec: FeatureSpec, ra: str, dec: str, classes: list[str] | None, client
) -> tuple[int | None, float]:
    """The coarsest order of ``FOLD_ORDERS`` at which the labelled rows fill at least
    ``FOLD_MIN_PIXELS`` pixels (``effective_pixels``), and that count; None when not even the
    finest does (split by row). Order 7 is counted over the whole table (at most 196,608 pixels);
    if the rows crowd into few of them, the densest ``FOLD_DENSE_PIXELS`` are counted again at the
    finest order (at most 4**5 cells each) and the others stay whole, which can only undercount."""
    import dask

    dropping = replace(spec, text_as_missing=True) if spec.missing == "drop" else None
    columns = [ra, dec, opts.truth]
    if dropping is not None:
        columns += spec.required_columns(table.columns)
    if opts.where:  # the columns the filter may name (a name it does not use costs a column read)
        columns += [c for c in table.columns if c in opts.where]
    parts = table.frame[list(dict.fromkeys(columns))].to_delayed()

    def counted(order: int, within: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        args = (ra, dec, opts.task, opts.truth, classes, opts.where, order, dropping, within)
        return _merged(client.compute([dask.delayed(_pixel_counts)(p, *args) for p in parts], sync=True))

    coarse, finest = FOLD_ORDERS[0], FOLD_ORDERS[-1]
    pixels, rows = counted(coarse)
    filled = effective_pixels(rows)
    if not len(pixels):  # no labelled row has a position: by row, as without positions
        return None, 0.0
    if filled >= FOLD_MIN_PIXELS:
        return coarse, filled
    placed_counts = rows[: len(pixels)]
    dense = pixels[np.argsort(placed_counts)[::-1][:FOLD_DENSE_PIXELS]]
    others = np.concatenate([placed_counts[~np.isin(pixels, dense)], rows[len(pixels) :]])
    fine, fine_rows = counted(finest, dense)
    for order in FOLD_ORDERS[1:]:
        _, index = np.unique(fine >> np.uint64(2 * (finest - order)), return_inverse=True)
        filled = effective_pixels(
            np.concatenate([np.bincount(index, weights=fine_rows[: len(fine)]), others])
        )
        if filled >= FOLD_MIN_PIXELS:
            return order, filled
    return None, filled


def _check_inputs(table: Table, opts: TrainOptions, spec: FeatureSpec) -> None:
    """The target or label is there, the features' inputs are there, and no input leaks the answer."""
    if opts.truth not in table.columns:
        raise TrainingError(
            f"{table.path}: no column {opts.truth!r} ({'--target' if opts.task == 'photoz' else '--label'}); columns: {table.columns}"
        )
    try:
        inputs = spec.required_columns(table.columns)
    except FeatureError as exc:
        raise TrainingError(f"{table.path}: {exc}") from None
    if opts.truth in inputs:
        raise TrainingError(
            f"{table.path}: the {'target' if opts.task == 'photoz' else 'label'} column {opts.truth!r} is also used as a feature (that leaks the answer)"
        )
    if opts.task == "classify":
        leaks = [c for c in inputs if c.lower() in SPECTROSCOPIC_COLUMNS]
        if leaks:
            raise TrainingError(
                f"{table.path}: feature column(s) {leaks} hold spectroscopic redshifts; a photometric classifier must not use them (it leaks the class)"
            )


def _label_classes(table: Table, opts: TrainOptions) -> list[str]:
    """The classes of the labelled rows (after --where), sorted; at least two."""
    labelled = table.frame.query(opts.where) if opts.where else table.frame
    counts = labelled[opts.label].astype("string").str.strip().value_counts().compute()
    counts = counts[counts.index.notna()]
    classes = sorted(str(c) for c in counts.index)
    if len(classes) < 2:
        raise TrainingError(
            f"{table.path}: label column {opts.label!r} has a single class ({classes}); a classifier needs at least two"
        )
    return classes


def magnitude_column(opts: TrainOptions, spec: FeatureSpec, table: Table) -> str | None:
    """The column the metrics are binned in: --mag-column, else ``r`` when present, else the first
    feature that is a band magnitude column (``MAG_R``, ``i``), else none."""
    from survey_engine.features.spec import extinction_coefficient

    if opts.magnitude:
        if opts.magnitude not in table.columns:
            raise TrainingError(
                f"{table.path}: --mag-column {opts.magnitude!r} is not a column (columns: {table.columns[:40]})"
            )
        return opts.magnitude
    if "r" in table.columns:
        return "r"
    return next(
        (f for f in spec.features if f in table.columns and extinction_coefficient(f) is not None), None
    )


def table_positions(table: Table, opts: TrainOptions) -> tuple[str | None, str | None]:
    if table.catalog is not None:
        return opts.ra_column or table.catalog.ra_column, opts.dec_column or table.catalog.dec_column
    ra, dec = opts.ra_column or "ra", opts.dec_column or "dec"
    return (ra, dec) if ra in table.columns and dec in table.columns else (None, None)
