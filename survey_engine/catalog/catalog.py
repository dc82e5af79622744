"""Lazy catalogs: open a HATS catalog or collection, select, transform, compute or write.

Nothing is read until ``compute()``, ``to_dask()`` is computed, or ``write()``. Selections
first prune partitions with HEALPix coverage (so only overlapping files are ever opened),
then filter rows exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from survey_engine.catalog import layout
from survey_engine.catalog.healpix import SPATIAL_INDEX_COLUMN, SPATIAL_INDEX_ORDER, pixel_range29
from survey_engine.catalog import selection as sel

# A per-partition transform: pandas DataFrame in, pandas DataFrame out.
Transform = Callable[[pd.DataFrame], pd.DataFrame]


@dataclass(frozen=True)
class Catalog:
    """A lazy HEALPix-partitioned catalog (one HATS catalog, optionally with its margin)."""

    path: Path
    properties: dict
    partitions: pd.DataFrame  # Norder, Npix of the partitions still selected
    schema: pa.Schema
    columns: tuple[str, ...] | None = None
    transforms: tuple[Transform, ...] = ()
    meta: pd.DataFrame | None = None  # output frame layout once transforms change columns
    margin: "Catalog | None" = None
    filtered: bool = False  # True once a row filter makes the metadata row count stale
    name: str = ""

    # --- metadata -----------------------------------------------------------------------
    @property
    def ra_column(self) -> str:
        return self.properties.get("hats_col_ra", "ra")

    @property
    def dec_column(self) -> str:
        return self.properties.get("hats_col_dec", "dec")

    @property
    def npartitions(self) -> int:
        return len(self.partitions)

    @property
    def margin_radius_arcsec(self) -> float | None:
        return float(self.margin.properties["hats_margin_threshold"]) if self.margin is not None else None

    def row_count(self) -> int:
        """Rows in the selected partitions, from the parquet footers (no data read).

        After a row filter (cone, box, ...) the exact count needs ``len(compute())``.
        """
        if self.filtered:
            raise ValueError("row_count() is only known from metadata before row filters; use len(catalog.compute())")
        if len(self.partitions) == len(layout.read_partition_info(self.path)):
            return int(self.properties.get("hats_nrows", self._footer_rows()))
        return self._footer_rows()

    def _footer_rows(self) -> int:
        return sum(self.partition_rows())

    def partition_rows(self) -> list[int]:
        """Rows stored in each selected partition file (parquet footers; before any row filter),
        in ``partitions`` order: an upper bound on what each partition yields."""
        return [pq.read_metadata(p).num_rows for p in self.partition_files()]

    def __len__(self) -> int:
        return self.row_count()

    def partition_files(self) -> list[Path]:
        return [layout.partition_path(self.path, o, p) for o, p in zip(self.partitions.Norder, self.partitions.Npix)]

    @cached_property
    def nullable_columns(self) -> tuple[str, ...]:
        """Integer and boolean columns that hold nulls somewhere (from the Parquet statistics):
        they are read as pandas' nullable dtypes (``Int16``, ``boolean``) in every partition, so
        their nulls survive and every partition has the same dtypes as the metadata frame."""
        return layout.columns_with_nulls(self.path, self.schema, self.partition_files())

    def column_names(self) -> list[str]:
        if self.meta is not None:
            return list(self.meta.columns)
        names = [n for n in self.schema.names if n != SPATIAL_INDEX_COLUMN]
        return [c for c in names if self.columns is None or c in self.columns]

    def __repr__(self) -> str:
        margin = f", margin {self.margin_radius_arcsec:g}\"" if self.margin is not None else ""
        return f"Catalog({self.name!r}, {self.npartitions} partitions, columns={self.column_names()}{margin})"

    # --- lazy operations ----------------------------------------------------------------
    def select_columns(self, columns: list[str]) -> "Catalog":
        """Keep only these columns (RA/Dec are read anyway where a selection needs them)."""
        available = self.column_names()
        missing = [c for c in columns if c not in available]
        if missing:
            raise KeyError(f"{self.path}: column(s) {missing} not in catalog; available: {available}")
        if self.transforms:
            return self.map_partitions(lambda df, cols=list(columns): df[cols])
        margin = self.margin.select_columns(columns) if self.margin is not None else None
        return replace(self, columns=tuple(columns), margin=margin)

    def __getitem__(self, columns: list[str] | str) -> "Catalog":
        return self.select_columns([columns] if isinstance(columns, str) else list(columns))

    def map_partitions(self, func: Transform, meta: pd.DataFrame | None = None) -> "Catalog":
        """Apply ``func`` (pandas -> pandas) to every partition, lazily; applied to the margin too."""
        margin = self.margin.map_partitions(func, meta) if self.margin is not None else None
        new = replace(self, transforms=self.transforms + (func,), margin=margin, filtered=True)
        return replace(new, meta=meta if meta is not None else new._infer_meta())

    def _pixel_filter(self, keep: np.ndarray, row_filter: Transform | None) -> "Catalog":
        parts = self.partitions[keep].reset_index(drop=True)
        margin = self.margin._pixel_filter_like(parts, row_filter) if self.margin is not None else None
        new = replace(self, partitions=parts, margin=margin)
        if row_filter is not None:
            new = replace(new, transforms=new.transforms + (row_filter,), filtered=True)
        return new

    def _pixel_filter_like(self, parts: pd.DataFrame, row_filter: Transform | None) -> "Catalog":
        """Keep the margin partitions of the primary partitions that remain."""
        keys = set(zip(parts.Norder, parts.Npix))
        keep = np.array([k in keys for k in zip(self.partitions.Norder, self.partitions.Npix)], dtype=bool)
        new = replace(self, partitions=self.partitions[keep].reset_index(drop=True))
        if row_filter is not None:
            new = replace(new, transforms=new.transforms + (row_filter,), filtered=True)
        return new

    def cone_search(self, ra: float, dec: float, radius_arcsec: float) -> "Catalog":
        """Rows within ``radius_arcsec`` of (ra, dec) degrees."""
        cov = sel.cone_coverage(ra, dec, radius_arcsec)
        return self._pixel_filter(self._overlaps(cov), sel.cone_filter(self.ra_column, self.dec_column, ra, dec, radius_arcsec))

    def box_search(self, ra_min: float, ra_max: float, dec_min: float, dec_max: float) -> "Catalog":
        """Rows with ra in [ra_min, ra_max] (wrapping through 0 when ra_min > ra_max) and dec in [dec_min, dec_max]."""
        cov = sel.box_coverage(ra_min, ra_max, dec_min, dec_max)
        return self._pixel_filter(self._overlaps(cov), sel.box_filter(self.ra_column, self.dec_column, ra_min, ra_max, dec_min, dec_max))

    def polygon_search(self, vertices: list[tuple[float, float]]) -> "Catalog":
        """Rows inside the spherical polygon with these (ra, dec) vertices (great-circle edges)."""
        cov = sel.polygon_coverage(vertices)
        return self._pixel_filter(self._overlaps(cov), sel.polygon_filter(self.ra_column, self.dec_column, vertices))

    def pixel_search(self, pixels: list[tuple[int, int]]) -> "Catalog":
        """Rows inside any of the given (order, nested pixel) HEALPix pixels."""
        orders = np.array([o for o, _ in pixels], dtype=np.int64)
        pix = np.array([p for _, p in pixels], dtype=np.int64)
        cov = sel.normalise_ranges(*pixel_range29(orders, pix))
        return self._pixel_filter(self._overlaps(cov), sel.range_filter(cov))

    def _overlaps(self, ranges: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        start, stop = pixel_range29(self.partitions.Norder.to_numpy(), self.partitions.Npix.to_numpy())
        return sel.ranges_overlap(start, stop, ranges)

    # --- execution ----------------------------------------------------------------------
    def _read_columns(self) -> list[str] | None:
        if self.columns is None:
            return None
        cols = list(self.columns)
        # selections filter on RA/Dec/_healpix_29 before projecting; read them too.
        for extra in (SPATIAL_INDEX_COLUMN, self.ra_column, self.dec_column):
            if extra not in cols:
                cols.append(extra)
        return cols

    def _empty_frame(self) -> pd.DataFrame:
        frame = nullable_frame(self.schema.empty_table(), self.nullable_columns)
        return frame.set_index(SPATIAL_INDEX_COLUMN)

    def _infer_meta(self) -> pd.DataFrame:
        frame = self._empty_frame()
        for func in self.transforms:
            frame = func(frame)
        return frame

    def to_dask(self):
        """The Dask dataframe underneath: one partition per HEALPix partition, indexed by ``_healpix_29``."""
        import dask.dataframe as dd

        files = self.partition_files()
        meta = self.meta if self.meta is not None else self._project(self._empty_frame())
        if not files:
            return dd.from_pandas(meta, npartitions=1)
        return dd.from_map(
            read_partition,
            [str(f) for f in files],
            read_columns=self._read_columns(),
            keep_columns=self.columns,
            transforms=self.transforms,
            nullable=self.nullable_columns,
            meta=meta,
            label="read-hats",
            enforce_metadata=False,
        )

    def _project(self, frame: pd.DataFrame) -> pd.DataFrame:
        return frame[list(self.columns)] if self.columns is not None else frame

    def compute(self) -> pd.DataFrame:
        """Run the lazy plan and return pandas (on the current Dask client if there is one)."""
        from survey_engine.runtime import compute_frame

        return compute_frame(self.to_dask())

    def to_astropy(self, max_rows: int = 10_000_000):
        """The result as an astropy Table (for small results: refuses more than ``max_rows``)."""
        from astropy.table import Table

        df = self.compute()
        if len(df) > max_rows:
            raise ValueError(f"{len(df)} rows is more than max_rows={max_rows} for an astropy Table; select first")
        return Table.from_pandas(df.reset_index())

    def crossmatch(self, other: "Catalog", radius_arcsec: float, **kwargs):
        """Lazy cross-match with ``other`` (see ``survey_engine.crossmatch.crossmatch`` for options)."""
        from survey_engine.crossmatch import crossmatch

        return crossmatch(self, other, radius_arcsec, **kwargs)

    def write(self, out: str | Path, name: str | None = None, client=None, progress: bool = False) -> Path:
        """Write this (derived) catalog, and its margin if any, as a new HATS collection at ``out``."""
        from survey_engine.catalog.writer import write_catalog

        return write_catalog(self, Path(out), name=name, client=client, progress=progress)


_NULLABLE_DTYPES = {pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype(),
                    pa.uint8(): pd.UInt8Dtype(), pa.uint16(): pd.UInt16Dtype(), pa.uint32(): pd.UInt32Dtype(),
                    pa.uint64(): pd.UInt64Dtype(), pa.bool_(): pd.BooleanDtype()}


def nullable_frame(table: pa.Table, nullable=()) -> pd.DataFrame:
    """``table.to_pandas()`` with the integer / boolean columns named in ``nullable`` as pandas
    nullable dtypes (Arrow's plain conversion turns an int column with nulls into float64, and
    a boolean one into objects, differently in each partition)."""
    frame = table.to_pandas()
    for name in nullable:
        if name in frame.columns and table.schema.field(name).type in _NULLABLE_DTYPES:
            frame[name] = table.column(name).to_pandas(types_mapper=_NULLABLE_DTYPES.get).array
    return frame


def read_partition(path: str | Path, read_columns=None, keep_columns=None, transforms=(), nullable=()) -> pd.DataFrame:
    """Read one partition file into pandas, indexed by ``_healpix_29``, then apply transforms;
    the ``nullable`` integer / boolean columns keep their nulls (see ``nullable_frame``)."""
    table = pq.read_table(path, columns=read_columns)
    drop = [c for c in ("Norder", "Dir", "Npix") if c in table.column_names]
    if drop:
        table = table.drop_columns(drop)
    frame = nullable_frame(table, nullable)
    if SPATIAL_INDEX_COLUMN in frame.columns:
        frame = frame.set_index(SPATIAL_INDEX_COLUMN)
    for func in transforms:
        frame = func(frame)
    if keep_columns is not None:
        frame = frame[[c for c in frame.columns if c in keep_columns]]
    return frame


def open_catalog(path: str | Path, margin: str | None = "default") -> Catalog:
    """Open a HATS catalog or collection (written by survey_engine, hats-import or LSDB).

    For a collection the main catalog is opened with its default margin (``margin=None`` to skip
    it, or the margin's folder name to pick another).
    """
    path = Path(path)
    if (path / layout.COLLECTION_FILE).exists():
        cprops = layout.read_properties(path / layout.COLLECTION_FILE)
        main = _open_single(path / cprops["hats_primary_table_url"])
        margins = cprops.get("all_margins", "").split()
        chosen = cprops.get("default_margin") or (margins[0] if margins else None)
        if margin not in (None, "default"):
            if margin not in margins:
                raise KeyError(f"{path}: no margin catalog {margin!r}; available: {margins}")
            chosen = margin
        if margin is not None and chosen:
            main = replace(main, margin=_open_single(path / chosen))
        return main
    if (path / layout.PROPERTIES_FILE).exists() or (path / "properties").exists():
        return _open_single(path)
    raise FileNotFoundError(f"{path}: not a HATS catalog or collection (no collection.properties or hats.properties)")


def _open_single(path: Path) -> Catalog:
    props_file = path / layout.PROPERTIES_FILE
    if not props_file.exists():
        props_file = path / "properties"
    if not props_file.exists():
        raise FileNotFoundError(f"{path}: no hats.properties")
    props = layout.read_properties(props_file)
    parts = layout.read_partition_info(path)
    start, _ = pixel_range29(parts.Norder.to_numpy(), parts.Npix.to_numpy())
    parts = parts.iloc[np.argsort(start, kind="stable")].reset_index(drop=True)
    common = path / layout.DATASET_DIR / "_common_metadata"
    if common.exists():
        schema = pq.read_schema(common)
    elif len(parts):
        schema = pq.read_schema(layout.partition_path(path, int(parts.Norder[0]), int(parts.Npix[0])))
    else:
        raise FileNotFoundError(f"{path}: no dataset/_common_metadata and no partitions")
    schema = pa.schema([f for f in schema if f.name not in ("Norder", "Dir", "Npix")], metadata=schema.metadata)
    return Catalog(path=path, properties=props, partitions=parts, schema=schema, name=props.get("obs_collection", path.name))


__all__ = ["Catalog", "open_catalog", "read_partition", "SPATIAL_INDEX_ORDER"]
