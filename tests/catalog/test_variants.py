"""Every HATS variant that hats 0.11 / LSDB read opens in survey_engine with LSDB's rows.

Each variant is built here by rewriting a catalog we import (the peers' own fixtures are not
shipped with their wheels): another spatial index column (``healpix13``), another partition
suffix (``.parq``), partitions stored as ``Npix=N/`` folders of several files, a collection with
several margins, and index / association catalogs that hold no rows.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from survey_engine import open_catalog
from survey_engine.catalog import layout
from survey_engine.catalog.layout import CatalogVariantError
from tests.conftest import random_sky

ROWS = 4000


@pytest.fixture(scope="module")
def base(tmp_path_factory, client) -> Path:
    """A 4,000-row all-sky collection (at most 400 rows a partition) with a 10-arcminute margin."""
    from survey_engine.ingest.file_import.arguments import ImportArguments
    from survey_engine.ingest.file_import.run import run_import

    work = tmp_path_factory.mktemp("variants")
    src = work / "sky.parquet"
    random_sky(ROWS, seed=7).to_parquet(src)
    out = work / "sky"
    run_import(
        ImportArguments([str(src)], str(out), id_column="id", max_rows=400, margin_arcsec=600.0),
        client=client,
        progress=False,
    )
    return out


def _copy(base: Path, tmp_path: Path, name: str) -> Path:
    dest = tmp_path / name
    shutil.copytree(base, dest)
    return dest


def _set_properties(catalog_dir: Path, **changes) -> None:
    for fname in (layout.PROPERTIES_FILE, "properties"):
        props = layout.read_properties(catalog_dir / fname)
        props.update({k: str(v) for k, v in changes.items()})
        layout.write_properties(catalog_dir / fname, props)


def _rewrite_metadata(catalog_dir: Path) -> None:
    """_metadata / _common_metadata from the rewritten partition files (paths as hats writes them)."""
    dataset = catalog_dir / layout.DATASET_DIR
    files = sorted(f for f in dataset.rglob("*") if f.is_file() and "Norder=" in str(f))
    collected = []
    for f in files:
        md = pq.read_metadata(f)
        md.set_file_path(str(f.relative_to(dataset)))
        collected.append(md)
    schema = pq.read_schema(files[0])
    pq.write_metadata(schema, dataset / "_common_metadata")
    pq.write_metadata(schema, dataset / "_metadata", metadata_collector=collected)


def _lsdb_rows(path: Path) -> pd.DataFrame:
    import lsdb

    return lsdb.open_catalog(path).compute()


def _ids(frame: pd.DataFrame) -> list[int]:
    return sorted(frame["id"].tolist())


def test_spatial_index_column_healpix13(base, tmp_path):
    coll = _copy(base, tmp_path, "sky13")
    for cat_dir in (coll / "sky", coll / "sky_600arcsec"):
        for f in (cat_dir / "dataset").rglob("Npix=*.parquet"):
            table = pq.read_table(f)
            hp13 = pc_shift(table.column("_healpix_29"))
            table = table.drop_columns(["_healpix_29"]).append_column("healpix13", hp13)
            pq.write_table(table, f)
        _rewrite_metadata(cat_dir)
        _set_properties(cat_dir, hats_col_healpix="healpix13", hats_col_healpix_order=13)
    cat = open_catalog(coll)
    frame = cat.compute()
    assert len(frame) == ROWS and _ids(frame) == _ids(_lsdb_rows(coll))
    assert frame.index.name == "_healpix_29" and np.all(np.diff(frame.index.to_numpy()) >= 0)
    assert np.array_equal(frame["healpix13"].to_numpy(), frame.index.to_numpy() >> 32)
    # selections and the margin work as on the original
    plain = open_catalog(base)
    assert _ids(cat.cone_search(40.0, 20.0, 15 * 3600).compute()) == _ids(
        plain.cone_search(40.0, 20.0, 15 * 3600).compute()
    )
    assert len(cat.margin.compute()) == len(plain.margin.compute())


def pc_shift(column: pa.ChunkedArray) -> pa.Array:
    return pa.array(column.to_numpy() >> 32, pa.int64())


def test_other_partition_suffix(base, tmp_path):
    coll = _copy(base, tmp_path, "sky_parq")
    cat_dir = coll / "sky"
    for f in list((cat_dir / "dataset").rglob("Npix=*.parquet")):
        f.rename(f.with_suffix(".parq"))
    _rewrite_metadata(cat_dir)
    _set_properties(cat_dir, hats_npix_suffix=".parq")
    cat = open_catalog(coll, margin=None)
    assert all(str(f).endswith(".parq") for f in cat.partition_files())
    assert cat.row_count() == ROWS == sum(cat.partition_rows())
    assert _ids(cat.compute()) == _ids(_lsdb_rows(cat_dir))


def test_partitions_as_folders_of_several_files(base, tmp_path):
    coll = _copy(base, tmp_path, "sky_dirs")
    cat_dir = coll / "sky"
    for f in list((cat_dir / "dataset").rglob("Npix=*.parquet")):
        table = pq.read_table(f)
        folder = f.with_suffix("")
        f.unlink()
        folder.mkdir()
        half = table.num_rows // 2
        pq.write_table(table.slice(0, half), folder / "part0.parquet")
        pq.write_table(table.slice(half), folder / "part1.parquet")
    _rewrite_metadata(cat_dir)
    _set_properties(cat_dir, hats_npix_suffix="/")
    cat = open_catalog(coll)
    assert all(f.is_dir() for f in cat.partition_files())
    assert sum(cat.partition_rows()) == ROWS
    frame = cat.compute()
    assert len(frame) == ROWS and _ids(frame) == _ids(_lsdb_rows(cat_dir))
    box = cat.box_search(10, 60, -20, 30).compute()
    want = frame[(frame.ra >= 10) & (frame.ra <= 60) & (frame.dec >= -20) & (frame.dec <= 30)]
    assert _ids(box) == _ids(want)


def test_several_margins_chosen_by_radius(base, tmp_path, client):
    from survey_engine.catalog.margin_build import build_margin
    from survey_engine.crossmatch import crossmatch

    coll = _copy(base, tmp_path, "sky_margins")
    build_margin(coll, 1200.0, client=client, progress=False)
    assert open_catalog(coll).margin_radius_arcsec == 600.0  # the default stays
    assert open_catalog(coll, margin=900.0).margin_radius_arcsec == 1200.0
    assert open_catalog(coll, margin=10.0).margin_radius_arcsec == 600.0
    assert open_catalog(coll, margin="sky_1200arcsec").margin_radius_arcsec == 1200.0
    with pytest.raises(CatalogVariantError, match="no margin of at least 9000 arcsec.*sky_600arcsec"):
        open_catalog(coll, margin=9000.0)
    with pytest.raises(CatalogVariantError, match="no margin catalog 'nope'"):
        open_catalog(coll, margin="nope")
    # a cross-match wider than the default margin takes the wider one of the collection
    result = crossmatch(open_catalog(base, margin=None), open_catalog(coll), 1000.0, how="nearest")
    assert result.right.margin_radius_arcsec == 1200.0


def test_index_and_association_catalogs_give_clear_errors(base, tmp_path):
    index = tmp_path / "sky_id_index"
    (index / "dataset").mkdir(parents=True)
    layout.write_properties(
        index / layout.PROPERTIES_FILE,
        {
            "obs_collection": "sky_id_index",
            "dataproduct_type": "index",
            "hats_primary_table_url": "sky",
            "hats_index_column": "id",
        },
    )
    with pytest.raises(
        CatalogVariantError, match=r"sky_id_index: an index catalog \(column 'id' -> partitions of sky\)"
    ):
        open_catalog(index)
    assn = tmp_path / "sky_to_sky"
    assn.mkdir()
    layout.write_properties(
        assn / layout.PROPERTIES_FILE,
        {
            "obs_collection": "sky_to_sky",
            "dataproduct_type": "association",
            "hats_primary_table_url": "sky",
            "hats_assn_join_table_url": "other",
            "hats_assn_leaf_files": "False",
        },
    )
    with pytest.raises(CatalogVariantError, match="sky_to_sky: an association catalog without leaf files"):
        open_catalog(assn)
    broken = _copy(base, tmp_path, "no_primary")
    text = (broken / layout.COLLECTION_FILE).read_text().replace("hats_primary_table_url=sky\n", "")
    (broken / layout.COLLECTION_FILE).write_text(text)
    with pytest.raises(CatalogVariantError, match="no hats_primary_table_url"):
        open_catalog(broken)


def test_nested_columns_keep_their_type_through_compute(base, tmp_path):
    coll = _copy(base, tmp_path, "sky_nested")
    cat_dir = coll / "sky"
    for f in (cat_dir / "dataset").rglob("Npix=*.parquet"):
        table = pq.read_table(f)
        ids = table.column("id").to_numpy()
        lists = pa.array([[int(i), int(i) + 1] for i in ids], pa.list_(pa.int64()))
        structs = pa.array(
            [{"id": int(i), "band": "g"} for i in ids], pa.struct([("id", pa.int64()), ("band", pa.string())])
        )
        pq.write_table(table.append_column("obs", lists).append_column("info", structs), f)
    _rewrite_metadata(cat_dir)
    cat = open_catalog(coll, margin=None)
    frame = cat.compute()
    assert isinstance(frame["obs"].dtype, pd.ArrowDtype) and pa.types.is_list(
        frame["obs"].dtype.pyarrow_dtype
    )
    assert isinstance(frame["info"].dtype, pd.ArrowDtype) and pa.types.is_struct(
        frame["info"].dtype.pyarrow_dtype
    )
    row = frame.iloc[0]
    assert list(row["obs"]) == [row["id"], row["id"] + 1] and row["info"] == {"id": row["id"], "band": "g"}
    written = open_catalog(cat.write(tmp_path / "rewritten"), margin=None)
    assert written.schema.field("obs").type == pa.list_(pa.int64())
    assert written.schema.field("info").type == structs.type


def test_garbage_properties_name_the_file(tmp_path):
    bad = tmp_path / "garbage"
    bad.mkdir()
    (bad / layout.PROPERTIES_FILE).write_bytes(bytes(range(128, 256)) * 3)
    with pytest.raises(CatalogVariantError, match=r"garbage/hats\.properties: not a properties file"):
        open_catalog(bad)


def test_writing_over_a_file_is_a_one_line_error(base, tmp_path):
    target = tmp_path / "a_file"
    target.write_text("x")
    with pytest.raises(FileExistsError, match="a_file: exists and is not a folder"):
        open_catalog(base).write(target)
    assert target.read_text() == "x"
