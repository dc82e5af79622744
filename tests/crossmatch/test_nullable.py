"""Nullable types end to end, on the real Gaia DR3 cone (int16 columns with nulls, such as
``phot_bp_n_contaminated_transits``) and on booleans and strings with nulls: every null survives
import, every cross-match (how x join), predict and write, with the column's own type."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from survey_engine.catalog.catalog import open_catalog
from survey_engine.crossmatch import crossmatch
from survey_engine.ingest.file_import.arguments import ImportArguments
from survey_engine.ingest.file_import.run import run_import
from tests.conftest import shared_path

CONE = "clusters_xmatch/gaia_dr3_cone_ra45_dec0_r0.5.parquet"


@pytest.fixture(scope="module")
def source() -> pa.Table:
    return pq.read_table(shared_path(CONE))


@pytest.fixture(scope="module")
def null_ints(source) -> dict[str, int]:
    """Integer columns of the real file that hold nulls, with their exact null counts."""
    found = {f.name: source.column(f.name).null_count for f in source.schema if pa.types.is_integer(f.type)}
    found = {k: v for k, v in found.items() if v}
    assert (
        found["phot_bp_n_contaminated_transits"] == 33 and len(found) == 11
    )  # as in the Gaia archive's answer
    return found


@pytest.fixture(scope="module")
def cone(client, tmp_path_factory) -> open_catalog:
    out = tmp_path_factory.mktemp("nullable") / "cone"
    run_import(
        ImportArguments(
            [str(shared_path(CONE))], str(out), id_column="source_id", max_rows=500, margin_arcsec=10.0
        ),
        client=client,
        progress=False,
    )
    return open_catalog(out)


def _truth(source: pa.Table, column: str) -> pd.Series:
    return pd.Series(
        source.column(column).to_pandas(types_mapper={pa.int16(): pd.Int16Dtype()}.get).array,
        index=source.column("source_id").to_numpy(),
    )


def test_import_keeps_integer_nulls_and_types(cone, source, null_ints):
    assert set(cone.nullable_columns) == set(null_ints)
    frame = cone.compute()
    for column, nulls in null_ints.items():
        assert str(frame[column].dtype) == "Int16" and int(frame[column].isna().sum()) == nulls, column
        assert cone.schema.field(column).type == source.schema.field(column).type
    truth = _truth(source, "phot_bp_n_contaminated_transits")
    got = pd.Series(frame["phot_bp_n_contaminated_transits"].array, index=frame["source_id"].to_numpy())
    pd.testing.assert_series_equal(got.sort_index(), truth.sort_index(), check_names=False)


@pytest.mark.slow
@pytest.mark.parametrize(
    "how, join", list(itertools.product(["nearest", "knn", "all", "one-to-one"], ["inner", "left", "outer"]))
)
def test_every_crossmatch_keeps_the_nulls(client, cone, source, null_ints, how, join):
    """A self-match within 5": each row finds itself, so each side carries exactly the file's
    nulls (plus, for left/outer joins, the nulls of the unmatched side, which are counted)."""
    result = crossmatch(cone, cone, 5.0, how=how, k=3, join=join).compute()
    truth = _truth(source, "phot_bp_n_contaminated_transits")
    for suffix in ("_1", "_2"):
        column = f"phot_bp_n_contaminated_transits{suffix}"
        assert str(result[column].dtype) == "Int16", (column, result[column].dtype)
        ids = result[f"source_id{suffix}"]
        present = ids.notna().to_numpy()
        values = pd.Series(result[column].array[present], index=ids[present].to_numpy(dtype=np.int64))
        expected = truth.loc[values.index]
        pd.testing.assert_series_equal(values, expected, check_names=False, check_index=False)
        # every null of a present row is there, exactly; no new nulls except on absent rows
        assert int(result[column].isna().sum()) == int(expected.isna().sum()) + int((~present).sum())
    if how == "nearest" and join == "inner":
        assert (
            len(result) == source.num_rows
            and int(result["phot_bp_n_contaminated_transits_1"].isna().sum()) == 33
        )


@pytest.mark.slow
@pytest.mark.parametrize("join", ["inner", "left", "outer"])
def test_written_crossmatch_keeps_int16_with_nulls(client, cone, null_ints, tmp_path, join):
    out = crossmatch(cone, cone, 5.0, join=join).write(tmp_path / f"xm_{join}", client=client)
    written = open_catalog(out)
    for column, nulls in null_ints.items():
        assert written.schema.field(f"{column}_1").type == pa.int16()
        table = pq.read_table(written.path / "dataset", columns=[f"{column}_1"])
        assert table.column(0).null_count == nulls, column  # every row matches itself: the file's nulls


def test_predict_and_write_keep_the_nulls(client, cone, null_ints, tmp_path):
    from survey_engine.ml.apply import predict
    from survey_engine.ml.unsupervised import train_pca

    train_pca(
        _collection(cone), ["phot_g_mean_mag", "bp_rp"], str(tmp_path / "m"), n_components=1, client=client
    )
    out = predict(
        str(tmp_path / "m"), str(_collection(cone)), str(tmp_path / "pred"), client=client, progress=False
    )
    frame = open_catalog(out).compute()
    assert "pca_1" in frame.columns and len(frame) == 2390
    for column, nulls in null_ints.items():
        assert str(frame[column].dtype) == "Int16" and int(frame[column].isna().sum()) == nulls, column


def _collection(cat) -> str:
    return str(cat.path.parent)


def test_booleans_strings_and_int64_with_nulls(client, tmp_path):
    """Synthetic columns of the kinds Gaia does not hold nulls in here: boolean, string, int64."""
    rng = np.random.default_rng(4)
    n = 4000
    ra, dec = rng.uniform(40, 50, n), rng.uniform(-5, 5, n)
    flags = pa.array([None if i % 7 == 0 else bool(i % 2) for i in range(n)], pa.bool_())
    names = pa.array([None if i % 5 == 0 else f"s{i}" for i in range(n)], pa.string())
    counts = pa.array([None if i % 3 == 0 else i for i in range(n)], pa.int64())
    table = pa.table(
        {"id": np.arange(n), "ra": ra, "dec": dec, "flag": flags, "name": names, "count": counts}
    )
    pq.write_table(table, tmp_path / "t.parquet")
    run_import(
        ImportArguments(
            [str(tmp_path / "t.parquet")],
            str(tmp_path / "cat"),
            id_column="id",
            max_rows=800,
            margin_arcsec=10.0,
        ),
        client=client,
        progress=False,
    )
    cat = open_catalog(tmp_path / "cat")
    frame = cat.compute()
    assert (
        int(frame["flag"].isna().sum()) == flags.null_count
        and int(frame["count"].isna().sum()) == counts.null_count
    )
    assert int(frame["name"].isna().sum()) == names.null_count
    for join in ("inner", "left", "outer"):
        result = crossmatch(cat, cat, 1.0, join=join).compute()
        assert len(result) == n  # each row is its own nearest neighbour within 1"
        for col, arr in (("flag", flags), ("name", names), ("count", counts)):
            assert (
                int(result[f"{col}_1"].isna().sum()) == arr.null_count
                and int(result[f"{col}_2"].isna().sum()) == arr.null_count
            )
    out = crossmatch(cat, cat, 1.0, join="left").write(tmp_path / "xm", client=client)
    written = pq.read_table(open_catalog(out).path / "dataset", columns=["flag_1", "name_2", "count_2"])
    assert [c.null_count for c in written.columns] == [flags.null_count, names.null_count, counts.null_count]
    assert (
        written.schema.field("count_2").type == pa.int64()
        and written.schema.field("flag_1").type == pa.bool_()
    )
