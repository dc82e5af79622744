"""Cross-matching two catalogs partition by partition on Dask.

``crossmatch(left, right, radius_arcsec, how=..., join=...)`` returns a lazy ``CrossmatchResult``;
nothing runs until ``compute()``, ``to_dask()`` is computed, or ``write()``. The output has the
left columns (suffix 1), the right columns (suffix 2) and ``sep_arcsec``, indexed by the left
row's ``_healpix_29`` and partitioned like the left catalog.

how:  ``nearest`` (the closest right row within the radius), ``knn`` (up to ``k`` closest),
      ``all`` (every pair within the radius).
join: ``inner`` (matched left rows only), ``left`` (every left row; unmatched ones get nulls) or
      ``outer`` (``left`` plus every right row that no left row matched, with nulls on the left
      side; such a row is indexed and partitioned by its own position). Every ``how`` takes every
      join: for ``one-to-one`` "unmatched" means not kept by the one-to-one choice.
``min_radius_arcsec`` drops pairs closer than it; ``exclude_self`` drops a row matched with
itself (same ``_healpix_29`` and identical coordinates), for self-matches. A self-match with
``how="all"`` and ``join="inner"`` lists each close pair once (the row that sorts first by
``_healpix_29``, RA, Dec on the left); ``nearest`` / ``knn`` and the left / outer joins give every
row its own neighbours, so a pair of mutual neighbours appears in both orders.
Ties in separation are broken by the right row's ``_healpix_29``, then its order in its partition.
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from survey_engine.catalog import storage
from survey_engine.catalog.catalog import Catalog
from survey_engine.catalog.healpix import SPATIAL_INDEX_COLUMN
from survey_engine.crossmatch.algorithms import (
    DEFAULT_ALGORITHM,
    CrossmatchMethod,
    gpu_available,
    method_for,
)
from survey_engine.crossmatch.epochs import EpochSpec, max_shift_arcsec
from survey_engine.crossmatch.plan import MatchTask, plan_crossmatch
from survey_engine.crossmatch.tasks import (  # noqa: F401
    HOWS,
    JOINS,
    MatchParams,
    match_task,
    shared_reads,
    sorted_rows,
    split_large_tasks,
)
from survey_engine.errors import UsageError, option
from survey_engine.runtime import ColumnSlots, compute_frame, local_threads, plain_pages, run_tasks


@dataclass
class CrossmatchResult:
    """A lazy cross-match: ``to_dask()``, ``compute()``, ``write(out)``."""

    left: Catalog
    right: Catalog
    params: MatchParams
    tasks: list[MatchTask] = field(default_factory=list)
    split_rows: int | None = None  # as asked (None: automatic, which write() does not split)

    @property
    def ra_column(self) -> str:
        return self.left.ra_column + self.params.suffixes[0]

    @property
    def dec_column(self) -> str:
        return self.left.dec_column + self.params.suffixes[0]

    def meta(self) -> pd.DataFrame:
        s1, s2 = self.params.suffixes
        lmeta = _read_meta(self.left, self.params.left_columns, self.params.left_epoch)
        rmeta = _read_meta(self.right, self.params.right_columns, self.params.right_epoch)
        data = {f"{c}{s1}": lmeta[c] for c in lmeta.columns}
        data.update({f"{c}{s2}": rmeta[c] for c in rmeta.columns})
        data[f"{SPATIAL_INDEX_COLUMN}{s2}"] = pd.Series([], dtype="int64")
        data["sep_arcsec"] = pd.Series([], dtype="float64")
        frame = pd.DataFrame(data)
        frame.index = pd.Index([], dtype="int64", name=SPATIAL_INDEX_COLUMN)
        if self.params.join == "left":
            frame = frame.astype(
                {c: _nullable(t) for c, t in frame.dtypes.items() if c.endswith(s2) or c == "sep_arcsec"}
            )
        elif self.params.join == "outer":
            frame = frame.astype({c: _nullable(t) for c, t in frame.dtypes.items()})
        return frame

    @property
    def in_memory(self) -> bool:
        """One-to-one and outer results are finished on the driver (a global choice / the right
        rows no left row matched), then served from memory."""
        return self.params.how == "one-to-one" or self.params.join == "outer"

    def to_dask(self):
        """The result as a Dask dataframe, one partition per left partition.

        For ``one-to-one`` the greedy choice needs every candidate pair, and ``outer`` needs to
        know every matched right row, so those are computed first and come back as an in-memory
        Dask dataframe.
        """
        import dask.dataframe as dd

        if self.in_memory:
            return dd.from_pandas(self.compute(), npartitions=max(1, len(self.tasks)), sort=False)
        return self._all_pairs_dask()

    def _all_pairs_dask(self):
        import dask.dataframe as dd

        meta = self.meta()
        lcoords = (self.left.ra_column, self.left.dec_column)
        rcoords = (self.right.ra_column, self.right.dec_column)
        if not self.tasks:
            return dd.from_pandas(meta, npartitions=1)
        return dd.from_map(
            match_task,
            self.tasks,
            p=self.params,
            lcoords=lcoords,
            rcoords=rcoords,
            empty=meta,
            meta=meta,
            label="crossmatch",
            enforce_metadata=False,
        )

    def _matched(self) -> pd.DataFrame:
        """Every left partition's matches, concatenated in partition order.

        With a distributed client the match tasks are submitted directly (``run_tasks``: results
        fetched as they finish, straight from workers on this machine): no Dask dataframe graph,
        so neither the driver nor a fresh worker imports dask.dataframe (half a second each cold).
        On a LocalCluster started in this process they run here instead, on as many threads as it
        has (the kernel and the Parquet reads release the GIL): the result is gathered here anyway,
        and 4.9 M rows pickled, sent and copied between processes cost more than the match."""
        try:
            from distributed import get_client

            client = get_client()
        except (ImportError, ValueError):
            return compute_frame(self._all_pairs_dask())
        meta = self.meta()
        capacities = self._row_bounds() if ColumnSlots.usable(meta) else None
        slots = ColumnSlots(meta, capacities) if capacities is not None else None
        self.params.method.prepare()
        calls = self.task_calls()
        threads = local_threads(client)
        if slots is not None and threads:  # run here: each task writes its own slot
            calls = [(*call, slots.target(i)) for i, call in enumerate(calls)]
        with shared_reads():  # tasks run here on threads read each right partition once
            parts = run_tasks(
                client,
                match_task,
                calls,
                "crossmatch",
                progress=False,
                sink=slots.put if slots else None,
                local=True,  # on a LocalCluster of this process: threads here, no result sent between processes
                threads=threads,
            )
        if slots is not None:
            return slots.frame()
        parts = [p for p in parts if len(p)]
        return pd.concat(parts) if parts else meta

    def _row_bounds(self) -> list[int] | None:
        """Most rows each task can return - k per left row for nearest / knn (a left join's
        unmatched row counts one) - from the left partitions' stored rows; None where unbounded."""
        if self.params.how not in ("nearest", "knn"):
            return None
        k = 1 if self.params.how == "nearest" else self.params.k
        try:
            rows = dict(zip(map(str, self.left.partition_files()), self.left.partition_rows()))
            return [
                k * (t.row_stop - t.row_start if t.row_stop is not None else rows[str(t.left_file)])
                for t in self.tasks
            ]
        except (OSError, ValueError, KeyError):  # a footer that cannot be read here: gather, then concatenate
            return None

    def task_calls(self, *extra) -> list[tuple]:
        """The arguments of ``match_task`` for each left partition, with ``extra`` appended."""
        meta = self.meta()
        lcoords = (self.left.ra_column, self.left.dec_column)
        rcoords = (self.right.ra_column, self.right.dec_column)
        return [(t, self.params, lcoords, rcoords, meta, *extra) for t in self.tasks]

    def compute(self) -> pd.DataFrame:
        with plain_pages():  # the driver allocates the whole result here
            return self._compute()

    def _compute(self) -> pd.DataFrame:
        if not self.in_memory:
            return self._matched()
        from survey_engine.crossmatch.joins import unmatched_rows

        s2 = self.params.suffixes[1]
        pairs = self._matched()
        if self.params.how == "one-to-one":
            from survey_engine.crossmatch.one_to_one import select_one_to_one

            pairs = select_one_to_one(
                pairs, self.ra_column, self.dec_column, self.right.ra_column + s2, self.right.dec_column + s2
            )
        meta = self.meta()
        pieces = [pairs]
        if self.params.how == "one-to-one" and self.params.join in ("left", "outer"):
            pieces.append(unmatched_rows(self, "left", pairs, meta))
        if self.params.join == "outer":
            pieces.append(unmatched_rows(self, "right", pairs, meta))
        pieces = [p for p in pieces if len(p)]
        if not pieces:
            return meta
        if len(pieces) == 1 and pieces[0].dtypes.equals(meta.dtypes):
            return sorted_rows(pieces[0], meta)  # an inner or plain left join: no second copy of the result
        return sorted_rows(pd.concat([p.astype(meta.dtypes.to_dict()) for p in pieces]), meta)

    def write(self, out: str | Path, name: str | None = None, client=None, progress: bool = False) -> Path:
        """Write the result as a HATS collection partitioned like the left catalog."""
        from survey_engine.crossmatch.output import write_result

        return write_result(
            self, out if storage.is_remote(out) else Path(out), name=name, client=client, progress=progress
        )


def _nullable(dtype):
    """The pandas dtype that can hold nulls for ``dtype``, of the same width (int16 -> Int16)."""
    if isinstance(dtype, np.dtype) and dtype.kind in "iu":
        return pd.api.types.pandas_dtype(dtype.name.capitalize().replace("Uint", "UInt"))
    if isinstance(dtype, np.dtype) and dtype.kind == "b":
        return "boolean"
    return dtype


def _read_meta(catalog: Catalog, columns, epoch: EpochSpec | None = None) -> pd.DataFrame:
    from survey_engine.catalog.catalog import nullable_frame

    frame = nullable_frame(catalog.schema.empty_table(), catalog.nullable_columns)
    frame = frame.drop(
        columns=[c for c in (SPATIAL_INDEX_COLUMN, "Norder", "Dir", "Npix") if c in frame.columns]
    )
    if columns is not None:
        keep = list(
            dict.fromkeys(
                [*columns, catalog.ra_column, catalog.dec_column, *(epoch.columns() if epoch else [])]
            )
        )
        frame = frame[keep]
    return frame


def crossmatch(
    left: Catalog,
    right: Catalog,
    radius_arcsec: float | None = None,
    how: str = "nearest",
    k: int = 1,
    join: str = "inner",
    min_radius_arcsec: float = 0.0,
    exclude_self: bool = False,
    suffixes: tuple[str, str] = ("_1", "_2"),
    algorithm: str | CrossmatchMethod = DEFAULT_ALGORITHM,
    left_columns: list[str] | None = None,
    right_columns: list[str] | None = None,
    build_margin: bool = False,
    epoch: float | None = None,
    left_epoch: EpochSpec | float | str | None = None,
    right_epoch: EpochSpec | float | str | None = None,
    client=None,
    split_rows: int | None = None,
) -> CrossmatchResult:
    """Plan a partition-aligned cross-match of ``left`` against ``right`` (lazy).

    ``algorithm`` is a kernel name (``zones``, ``kdtree``, ``grid``, ``gpu``) that takes the match
    parameters from the keywords, or an algorithm object that carries them
    (``KDTreeCrossmatch(radius_arcsec=2, how="knn", k=3)``); a keyword that disagrees with the
    object is refused.

    With ``epoch`` set, rows are compared at that epoch: a side given ``left_epoch`` /
    ``right_epoch`` (a Julian year, a per-row epoch column name, or an ``EpochSpec`` naming the
    proper-motion / parallax / RV columns) is moved there with its proper motions first; a side
    without one is taken as already at ``epoch``. The right margin must then cover the radius
    plus the largest motion of either side.

    ``split_rows``: a left partition of more rows than this is matched as several tasks
    (``tasks.split_large_tasks``; None: automatic, twice the median partition, for ``compute()``
    and ``to_dask()``, not ``write()``, where the pieces would have to be joined again; 0: never).
    """
    method = algorithm_object(
        algorithm,
        radius_arcsec=radius_arcsec,
        how=how,
        k=k,
        min_radius_arcsec=min_radius_arcsec,
        exclude_self=exclude_self,
    )
    if method.name == "gpu":
        usable, why = gpu_available()
        if not usable:
            print(
                f"survey-engine: the GPU cross-match kernel was asked for, but there is no usable GPU ({why}); "
                "running the same grid kernel on the CPU (--algorithm grid; algorithm='grid' in Python).",
                file=sys.stderr,
            )
            method = method.on_kernel("grid")
    capped = cap_k(method.k, method.how, right)
    if capped != method.k:
        method = replace(method, k=capped)
    as_spec = lambda e: e if (e is None or isinstance(e, EpochSpec)) else EpochSpec(e)  # noqa: E731
    params = MatchParams(
        method,
        join,
        tuple(suffixes),
        tuple(left_columns) if left_columns else None,
        tuple(right_columns) if right_columns else None,
        epoch,
        as_spec(left_epoch),
        as_spec(right_epoch),
        left.nullable_columns,
        right.nullable_columns,
    )
    if left.transforms or right.transforms:
        raise UsageError(
            "cross-match works on stored catalogs; write a derived catalog first (Catalog.write) and open it"
        )
    from survey_engine.crossmatch.plan import MarginTooSmallError

    motion = 0.0
    for side, spec in ((left, params.left_epoch), (right, params.right_epoch)):
        if spec is not None:
            motion += max_shift_arcsec(side, spec, params.target_epoch)
    reach = method.reach_arcsec(motion)
    right = right.with_margin_for(reach)  # a collection with several margins: the narrowest wide enough
    try:
        method.validate(left, right, motion)
    except MarginTooSmallError:
        if not build_margin:
            raise
        right = _with_margin(right, float(np.ceil(reach)), client)
    tasks = split_large_tasks(plan_crossmatch(left, right, reach), split_rows)
    return CrossmatchResult(left, right, params, tasks, split_rows)


def algorithm_object(algorithm: str | CrossmatchMethod, **keywords) -> CrossmatchMethod:
    """The algorithm object for ``crossmatch``: ``algorithm`` itself when it is one (a keyword
    that differs from both its default and the object's value is a ``UsageError``), else the
    object of that kernel name with the keywords (``radius_arcsec`` is then required)."""
    if isinstance(algorithm, CrossmatchMethod):
        defaults = {name: p.default for name, p in inspect.signature(crossmatch).parameters.items()}
        clashes = [
            f"{name}={value!r}"
            for name, value in keywords.items()
            if value != defaults[name] and value != getattr(algorithm, name)
        ]
        if clashes:
            raise UsageError(
                f"crossmatch: the keyword(s) {', '.join(clashes)} conflict with algorithm={algorithm!r}; "
                "give the match parameters either in the algorithm object or as keywords"
            )
        return algorithm
    if not isinstance(algorithm, str):
        raise UsageError(
            f"{option('--algorithm', 'algorithm')} must be a kernel name or a cross-match algorithm "
            f"object (e.g. KDTreeCrossmatch(radius_arcsec=1.0)), got {algorithm!r}"
        )
    if keywords.get("radius_arcsec") is None:
        raise UsageError(
            f"{option('--radius', 'radius_arcsec')} is required (or an algorithm object carrying it)"
        )
    return method_for(algorithm, **keywords)


def cap_k(k: int, how: str, right: Catalog) -> int:
    """``k`` for a kNN match, at most the right side's rows (metadata, no data read): asking for
    more neighbours than there are rows only costs memory (k = 10**6 on 2,390 rows took 11.7 GB)."""
    if how != "knn" or not isinstance(k, int) or k < 1:
        return k
    try:
        rows = right.row_count()
    except ValueError:  # a row filter makes the metadata count stale: footers bound it
        rows = sum(right.partition_rows())
    if k > max(rows, 1):
        import warnings

        warnings.warn(
            f"--k {k} is more than the {rows} rows of {right.path}; matching with k={max(rows, 1)}",
            stacklevel=3,
        )
        return max(rows, 1)
    return k


def _with_margin(right: Catalog, radius_arcsec: float, client) -> Catalog:
    """``right`` with a margin of ``radius_arcsec``, built beside its main catalog if missing."""
    from survey_engine.catalog import layout
    from survey_engine.catalog.catalog import open_catalog
    from survey_engine.catalog.margin_build import build_margin
    from survey_engine.catalog.margins import margin_catalog_name

    # in a collection and beside a lone catalog alike, the margin lands next to the main catalog
    margin_path = layout.safe_child(
        right.path.parent,
        margin_catalog_name(right.name, radius_arcsec),
        f"{right.path}: margin catalog name",
    )
    if not margin_path.exists():
        in_collection = (right.path.parent / layout.COLLECTION_FILE).exists()
        build_margin(
            right.path.parent if in_collection else right.path, radius_arcsec, client=client, progress=False
        )
    return replace(right, margin=open_catalog(margin_path, margin=None))
