"""Inputs judged, not massaged: what the import keeps, widens, renames, skips or refuses, and why."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from survey_engine import open_catalog
from survey_engine.ingest.file_import.arguments import ImportArguments
from survey_engine.ingest.file_import.run import run_import
from survey_engine.ingest.readers import InputError
from tests.conftest import random_sky


def _run(client, inputs, out, **kw):
    kw.setdefault("margin_arcsec", 0)
    return run_import(
        ImportArguments([str(i) for i in inputs], str(out), **kw), client=client, progress=False
    )


def test_empty_files_among_good_ones_are_skipped_with_a_note(tmp_path, client):
    sky = random_sky(300, seed=1)
    sky.to_csv(tmp_path / "a.csv", index=False)
    (tmp_path / "b_header_only.csv").write_text("id,ra,dec,mag\n")
    (tmp_path / "c_zero_bytes.csv").write_text("")
    sky.iloc[:0].to_parquet(tmp_path / "d_zero_rows.parquet")
    sky.to_parquet(tmp_path / "e.parquet")
    result = _run(
        client,
        [
            tmp_path / n
            for n in ("a.csv", "b_header_only.csv", "c_zero_bytes.csv", "d_zero_rows.parquet", "e.parquet")
        ],
        tmp_path / "out",
    )
    assert result.rows == 600 and len(result.skipped) == 3
    text = result.summary()
    assert "skipped 3 file(s) without rows" in text
    assert "b_header_only.csv: file holds no rows" in text and "c_zero_bytes.csv: empty CSV file" in text
    assert "d_zero_rows.parquet: file holds no rows" in text
    assert open_catalog(tmp_path / "out").row_count() == 600


def test_csv_with_comment_lines_and_a_bom(tmp_path, client):
    sky = random_sky(200, seed=2)
    body = sky.to_csv(index=False)
    gaia_style = "# Gaia archive export\n# query: SELECT ... FROM gaiadr3.gaia_source\n#   rows: 200\n" + body
    (tmp_path / "gaia.csv").write_text(gaia_style)
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + body.encode())
    result = _run(client, [tmp_path / "gaia.csv", tmp_path / "bom.csv"], tmp_path / "out")
    assert result.rows == 400
    frame = open_catalog(tmp_path / "out").compute()
    assert list(frame.columns) == ["id", "ra", "dec", "mag"]  # no "\ufeffid"
    assert np.allclose(np.sort(frame.ra.to_numpy()), np.sort(np.concatenate([sky.ra, sky.ra])))


def test_annz_commented_header_still_read(tmp_path, client):
    sky = random_sky(50, seed=3)
    text = "#id,ra,dec,mag\n" + sky.to_csv(index=False, header=False)
    (tmp_path / "annz.csv").write_text(text)
    assert _run(client, [tmp_path / "annz.csv"], tmp_path / "out").rows == 50


def test_column_types_unified_when_lossless(tmp_path, client):
    sky = random_sky(100, seed=4)
    a = pa.table(
        {
            "id": pa.array(sky.id[:50], pa.int32()),
            "ra": pa.array(sky.ra[:50], pa.float32()),
            "dec": sky.dec[:50],
            "mag": pa.nulls(50, pa.null()),
        }
    )
    b = pa.table(
        {
            "id": pa.array(sky.id[50:], pa.int64()),
            "ra": pa.array(sky.ra[50:], pa.float64()),
            "dec": sky.dec[50:],
            "mag": pa.array(sky.mag[50:], pa.float32()),
        }
    )
    pq.write_table(a, tmp_path / "a.parquet")
    pq.write_table(b, tmp_path / "b.parquet")
    _run(client, [tmp_path / "a.parquet", tmp_path / "b.parquet"], tmp_path / "out")
    cat = open_catalog(tmp_path / "out")
    assert cat.schema.field("id").type == pa.int64() and cat.schema.field("ra").type == pa.float64()
    assert cat.schema.field("mag").type == pa.float32()
    frame = cat.compute()
    assert sorted(frame.id) == list(range(100)) and frame.mag.isna().sum() == 50


def test_column_types_refused_naming_both_files_and_the_column(tmp_path, client):
    sky = random_sky(20, seed=5)
    pq.write_table(
        pa.table({"id": sky.id, "ra": sky.ra, "dec": sky.dec, "flag": pa.array(["x"] * 20)}),
        tmp_path / "a.parquet",
    )
    pq.write_table(
        pa.table({"id": sky.id, "ra": sky.ra, "dec": sky.dec, "flag": pa.array(np.arange(20), pa.int64())}),
        tmp_path / "b.parquet",
    )
    with pytest.raises(InputError, match=r"b\.parquet: column 'flag' is int64 but string in .*a\.parquet"):
        _run(client, [tmp_path / "a.parquet", tmp_path / "b.parquet"], tmp_path / "out")
    # int64 + double from declared types would lose integers above 2**53: refused too
    pq.write_table(
        pa.table({"id": sky.id, "ra": sky.ra, "dec": sky.dec, "flag": pa.array(np.arange(20), pa.int64())}),
        tmp_path / "c.parquet",
    )
    pq.write_table(
        pa.table({"id": sky.id, "ra": sky.ra, "dec": sky.dec, "flag": pa.array(np.arange(20) / 2)}),
        tmp_path / "d.parquet",
    )
    with pytest.raises(InputError, match=r"d\.parquet: column 'flag' is double but int64 in .*c\.parquet"):
        _run(client, [tmp_path / "c.parquet", tmp_path / "d.parquet"], tmp_path / "out2")


@pytest.mark.slow
def test_csv_type_inference_reads_past_the_first_block(tmp_path, client):
    """A valid 17 MB CSV whose `flux` looks integer in the first 16 MB block and holds 0.5
    later, and whose `note` is empty at first: it imports, with double and string columns."""
    n = 560_000
    rng = np.random.default_rng(6)
    sky = pd.DataFrame(
        {
            "id": np.arange(n),
            "ra": rng.uniform(0, 360, n).round(6),
            "dec": rng.uniform(-60, 60, n).round(6),
            "flux": rng.integers(0, 1000, n).astype(object),
            "note": [""] * n,
        }
    )
    sky.loc[n - 5, "flux"] = 0.5
    sky.loc[n - 3, "note"] = "late"
    path = tmp_path / "big.csv"
    sky.to_csv(path, index=False)
    assert path.stat().st_size > 16 * 2**20
    result = _run(client, [path], tmp_path / "out", max_rows=200_000)
    assert result.rows == n
    cat = open_catalog(tmp_path / "out")
    assert cat.schema.field("flux").type == pa.float64()
    frame = cat.compute()
    assert frame.loc[frame.id == n - 5, "flux"].item() == 0.5 and frame.flux.sum() == pytest.approx(
        sky.flux.astype(float).sum()
    )
    assert frame.loc[frame.id == n - 3, "note"].item() == "late"


def test_ra_far_outside_is_an_error_small_excursions_wrap(tmp_path, client):
    sky = random_sky(30, seed=7)
    bad = sky.copy()
    bad.loc[4, "ra"] = 1e20
    bad.to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(InputError, match=r"bad\.parquet: row 4: column 'ra' is outside \[-360, 720\]"):
        _run(client, [tmp_path / "bad.parquet"], tmp_path / "out")
    bad.loc[5, "ra"] = -2.8e79
    bad.to_parquet(tmp_path / "bad.parquet")
    result = _run(client, [tmp_path / "bad.parquet"], tmp_path / "out2", drop_invalid=True)
    assert result.rows == 28 and result.dropped == 2
    ok = sky.copy()
    ok.loc[0, "ra"] = -2.0
    ok.loc[1, "ra"] = 364.0
    ok.to_parquet(tmp_path / "ok.parquet")
    result = _run(client, [tmp_path / "ok.parquet"], tmp_path / "out3")
    assert result.wrapped_ra == 2
    ras = open_catalog(tmp_path / "out3").compute().set_index("id").ra
    assert ras[0] == 358.0 and ras[1] == pytest.approx(4.0)


def test_float32_ra_is_wrapped_in_float64(tmp_path, client):
    sky = random_sky(10, seed=8)
    ra = sky.ra.to_numpy(np.float32)
    ra[3] = np.float32(-1e-6)
    pq.write_table(
        pa.table({"id": sky.id, "ra": ra, "dec": sky.dec.astype(np.float32)}), tmp_path / "f32.parquet"
    )
    _run(client, [tmp_path / "f32.parquet"], tmp_path / "out")
    cat = open_catalog(tmp_path / "out")
    assert cat.schema.field("ra").type == pa.float64()
    value = cat.compute().set_index("id").ra[3]
    assert value < 360.0 and value == pytest.approx(360.0 - 1e-6, abs=1e-9)


def test_reserved_column_names_are_renamed_not_dropped(tmp_path, client):
    sky = random_sky(40, seed=9)
    for name in ("Dir", "Npix", "Norder", "_healpix_29"):
        sky[name] = np.arange(40) + 1000
    sky.to_csv(tmp_path / "r.csv", index=False)
    result = _run(client, [tmp_path / "r.csv"], tmp_path / "out")
    assert "renamed input columns reserved by HATS: " in result.summary()
    assert "Dir -> Dir_input" in result.summary() and "_healpix_29 -> _healpix_29_input" in result.summary()
    frame = open_catalog(tmp_path / "out").compute().sort_values("id")
    for name in ("Dir", "Npix", "Norder", "_healpix_29"):
        assert (frame[name + "_input"].to_numpy() == np.arange(40) + 1000).all()


def test_leftover_partial_of_a_published_run_is_removed(tmp_path, client):
    random_sky(50, seed=10).to_parquet(tmp_path / "s.parquet")
    out = tmp_path / "out"
    _run(client, [tmp_path / "s.parquet"], out)
    partial = tmp_path / "out.partial"
    (partial / "shards").mkdir(parents=True)  # as a kill between the publish and the cleanup leaves it
    (partial / "shards" / "main_000000.arrow").write_bytes(b"x" * 1000)
    result = _run(client, [tmp_path / "s.parquet"], out)
    assert result.up_to_date and not partial.exists()
    assert "removed the leftover" in result.summary()


def test_output_path_that_is_a_file_is_a_one_line_error(tmp_path, client):
    random_sky(10, seed=11).to_parquet(tmp_path / "s.parquet")
    (tmp_path / "taken").write_text("not a folder")
    with pytest.raises(InputError, match=r"taken: exists and is not a folder"):
        _run(client, [tmp_path / "s.parquet"], tmp_path / "taken")


def test_damaged_inputs_name_the_file(tmp_path, client):
    t = pa.Table.from_arrays(
        [pa.array([1.0, 2.0]), pa.array([3.0, 4.0]), pa.array([5.0, 6.0])], names=["ra", "dec", "ra"]
    )
    pq.write_table(t, tmp_path / "dup.parquet")
    with pytest.raises(InputError, match=r"dup\.parquet: column name\(s\) \['ra'\] appear more than once"):
        _run(client, [tmp_path / "dup.parquet"], tmp_path / "out")


def test_cli_error_is_one_line_without_worker_logs(tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO

    sky = random_sky(50, seed=12)
    sky.loc[7, "dec"] = 95.0
    sky.to_parquet(tmp_path / "baddec.parquet")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "survey_engine.cli",
            "import",
            str(tmp_path / "baddec.parquet"),
            "--out",
            str(tmp_path / "out"),
            "--workers",
            "2",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert proc.returncode == 2
    assert (
        "Compute Failed" not in proc.stderr
        and "distributed." not in proc.stderr
        and "Traceback" not in proc.stderr
    )
    assert proc.stderr.strip().splitlines()[-1].endswith("(use --drop-invalid to drop them and count them)")
    assert "baddec.parquet: row 7: column 'dec' is outside [-90, 90]" in proc.stderr
