"""Bad input: a clear error naming the file / column / row, and nothing half-written."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from survey_engine import open_catalog
from survey_engine.ingest.file_import.arguments import ImportArguments
from survey_engine.ingest.file_import.run import run_import
from survey_engine.ingest.readers import InputError
from tests.conftest import REPO, random_sky


def _run(client, inputs, out, **kw):
    return run_import(
        ImportArguments([str(i) for i in inputs], str(out), **kw), client=client, progress=False
    )


def _assert_nothing_published(out):
    assert not out.exists() or not any(out.iterdir())


def test_missing_coordinate_column_names_file_and_columns(tmp_path, client):
    src = tmp_path / "a.csv"
    random_sky(100).rename(columns={"ra": "RA_ICRS"}).to_csv(src, index=False)
    with pytest.raises(InputError, match=r"a\.csv.*'ra' not found.*RA_ICRS"):
        _run(client, [src], tmp_path / "out")
    _assert_nothing_published(tmp_path / "out")


def test_non_numeric_coordinates(tmp_path, client):
    df = random_sky(50)
    df["dec"] = df["dec"].astype(str) + "d"
    src = tmp_path / "b.parquet"
    df.to_parquet(src)
    with pytest.raises(InputError, match=r"b\.parquet.*'dec' is not numeric"):
        _run(client, [src], tmp_path / "out")


def test_nan_coordinates_rejected_or_dropped_and_counted(tmp_path, client):
    df = random_sky(1000)
    df.loc[[10, 20, 30], "ra"] = np.nan
    df.loc[40, "dec"] = 95.0
    src = tmp_path / "c.parquet"
    df.to_parquet(src)
    with pytest.raises(InputError, match=r"c\.parquet: row 10: column 'ra' is missing or NaN"):
        _run(client, [src], tmp_path / "out")
    _assert_nothing_published(tmp_path / "out")
    result = _run(client, [src], tmp_path / "out2", drop_invalid=True)
    assert result.dropped == 4 and result.rows == 996
    assert "dropped 4 rows" in result.summary()
    assert open_catalog(result.out).row_count() == 996


def test_dec_out_of_range_names_row(tmp_path, client):
    df = random_sky(500)
    df.loc[123, "dec"] = -91.0
    src = tmp_path / "d.csv"
    df.to_csv(src, index=False)
    with pytest.raises(InputError, match=r"d\.csv: row 123: column 'dec' is outside \[-90, 90\]"):
        _run(client, [src], tmp_path / "out")


def test_empty_inputs(tmp_path, client):
    empty = tmp_path / "e.csv"
    empty.write_text("")
    with pytest.raises(InputError, match=r"e\.csv: empty CSV file"):
        _run(client, [empty], tmp_path / "out")
    header_only = tmp_path / "h.csv"
    header_only.write_text("id,ra,dec\n")
    with pytest.raises(InputError, match=r"h\.csv: file holds no rows"):
        _run(client, [header_only], tmp_path / "out")
    zero = tmp_path / "z.parquet"
    random_sky(10).iloc[:0].to_parquet(zero)
    with pytest.raises(InputError, match=r"z\.parquet: no rows to import"):
        _run(client, [zero], tmp_path / "out")
    with pytest.raises(InputError, match="matches no input files"):
        _run(client, [tmp_path / "nothing_*.parquet"], tmp_path / "out")
    with pytest.raises(InputError, match="no such file"):
        _run(client, [tmp_path / "missing.parquet"], tmp_path / "out")


def test_truncated_and_unreadable_files(tmp_path, client):
    good = tmp_path / "good.parquet"
    random_sky(5000).to_parquet(good)
    data = good.read_bytes()
    trunc = tmp_path / "trunc.parquet"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"trunc\.parquet: cannot read parquet"):
        _run(client, [good, trunc], tmp_path / "out")
    _assert_nothing_published(tmp_path / "out")
    fits = tmp_path / "broken.fits"
    fits.write_bytes(b"SIMPLE  =                    T" + b" " * 50)
    with pytest.raises(InputError, match=r"broken\.fits"):
        _run(client, [fits], tmp_path / "out")
    weird = tmp_path / "table.dat"
    weird.write_text("x")
    with pytest.raises(InputError, match=r"table\.dat: cannot tell the file format"):
        _run(client, [weird], tmp_path / "out")


def test_files_with_different_columns_are_refused(tmp_path, client):
    random_sky(100).to_parquet(tmp_path / "a.parquet")
    random_sky(100).drop(columns=["mag"]).to_parquet(tmp_path / "b.parquet")
    with pytest.raises(InputError, match=r"b\.parquet: columns differ.*missing: \['mag'\]"):
        _run(client, [tmp_path / "a.parquet", tmp_path / "b.parquet"], tmp_path / "out")


def test_empty_id_value_is_refused(tmp_path, client):
    df = random_sky(100)
    df["id"] = df["id"].astype("Int64")
    df.loc[7, "id"] = pd.NA
    df.to_parquet(tmp_path / "i.parquet")
    with pytest.raises(InputError, match=r"i\.parquet: id column 'id' is empty at row 7"):
        _run(client, [tmp_path / "i.parquet"], tmp_path / "out", id_column="id")


@pytest.mark.parametrize(
    "args,message",
    [
        (["--max-rows", "0"], "--max-rows must be a positive number of rows, got 0"),
        (["--margin", "-1"], "--margin must be >= 0"),
        (["--highest-order", "20"], "--highest-order must be within 0..13"),
    ],
)
def test_cli_rejects_bad_parameters(tmp_path, args, message):
    src = tmp_path / "s.parquet"
    random_sky(10).to_parquet(src)
    proc = subprocess.run(
        [sys.executable, "-m", "survey_engine.cli", "import", str(src), "--out", str(tmp_path / "o"), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not (tmp_path / "o").exists()


def test_interrupted_import_leaves_no_complete_looking_catalog(tmp_path, client, monkeypatch):
    """An error in the middle (here: in the reduce step) publishes nothing; a re-run completes."""
    from survey_engine.catalog import build

    src = tmp_path / "x.parquet"
    random_sky(20_000).to_parquet(src)
    out = tmp_path / "cat"
    original = build.reduce_all

    def interrupt_at_margin(*a, **k):
        if k.get("only_with_rows"):  # the main catalog is written, the margin is not
            raise KeyboardInterrupt
        return original(*a, **k)

    monkeypatch.setattr(build, "reduce_all", interrupt_at_margin)
    with pytest.raises(KeyboardInterrupt):
        _run(client, [src], out, max_rows=2000)
    _assert_nothing_published(out)
    monkeypatch.setattr(build, "reduce_all", original)
    result = _run(client, [src], out, max_rows=2000)
    assert result.resumed and open_catalog(out).row_count() == 20_000


def test_failed_import_that_wrote_nothing_leaves_nothing_behind(tmp_path, client):
    src = tmp_path / "a.csv"
    random_sky(100).rename(columns={"ra": "RA_ICRS"}).to_csv(src, index=False)
    for _ in range(2):  # and again: no leftover from the first try changes the second
        with pytest.raises(InputError, match=r"a\.csv.*'ra' not found"):
            _run(client, [src], tmp_path / "out")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv"]  # no out/, no out.partial/
    with pytest.raises(InputError, match="no such file|does not exist|not found"):
        _run(client, [tmp_path / "missing.csv"], tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv"]
