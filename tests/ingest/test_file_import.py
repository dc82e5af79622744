"""Import from every supported format, on real files; resumability; the output rules."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from survey_engine import open_catalog
from survey_engine.ingest.file_import.arguments import ImportArguments
from survey_engine.ingest.file_import.run import run_import
from survey_engine.ingest.readers import InputError
from tests.conftest import REPO, LateTask, random_sky, shared_path


def _split_frame(df, n):
    bounds = np.linspace(0, len(df), n + 1).astype(int)
    return [df.iloc[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _import(client, inputs, out, **kw):
    kw.setdefault("margin_arcsec", 5.0)
    return run_import(
        ImportArguments([str(i) for i in inputs], str(out), **kw), client=client, progress=False
    )


def test_fits_import_keeps_types_and_units(tmp_path, client):
    from astropy.table import Table

    src = shared_path("clusters_xmatch/ngc2323/ngc2323_gaia_field.fits")
    ref = Table.read(src)
    result = _import(client, [src], tmp_path / "ngc2323", max_rows=3000)
    cat = open_catalog(result.out)
    assert cat.row_count() == len(ref) == result.rows
    frame = cat.compute().sort_values(["ra", "dec"])
    want = ref.to_pandas().sort_values(["ra", "dec"])
    for col in ("ra", "dec", "pmra", "parallax", "phot_g_mean_mag"):
        assert frame[col].dtype == want[col].dtype, col
        assert np.array_equal(frame[col].to_numpy(), want[col].to_numpy(), equal_nan=True), col
    field = cat.schema.field("pmra")
    import astropy.units as u

    assert field.metadata and u.Unit(field.metadata[b"unit"].decode(), format="fits") == ref["pmra"].unit


def test_votable_import_keeps_ucds_and_masks(tmp_path, client):
    from astropy.io.votable import parse_single_table

    src = shared_path("clusters_xmatch/ngc2323/ngc2323_simbad_region.vot.xml")
    ref = parse_single_table(str(src)).to_table()
    result = _import(
        client, [src], tmp_path / "simbad", ra_column="RA", dec_column="DEC", id_column="MAIN_ID"
    )
    cat = open_catalog(result.out)
    frame = cat.compute()
    assert len(frame) == len(ref)
    assert set(frame["MAIN_ID"]) == set(str(x) for x in ref["MAIN_ID"])
    assert frame["PLX_VALUE"].isna().sum() == int(np.ma.getmaskarray(ref["PLX_VALUE"]).sum())
    meta = cat.schema.field("MAIN_ID").metadata
    assert meta[b"ucd"] == b"meta.id;meta.main" and meta[b"description"] == b"Main identifier for an object"
    assert cat.schema.field("COO_ERR_MAJA").metadata[b"unit"] == b"mas"
    # a Gaia VOTable keeps its units and UCDs on the coordinate columns too
    gaia = _import(
        client,
        [shared_path("clusters_xmatch/rho_oph/gaia_sample_cleaned.vot")],
        tmp_path / "oph",
        id_column="source_id",
    )
    gschema = open_catalog(gaia.out).schema
    assert (
        gschema.field("ra").metadata[b"ucd"] == b"pos.eq.ra;meta.main"
        and gschema.field("parallax").metadata[b"unit"] == b"mas"
    )
    assert gaia.rows == 2300


def test_csv_import_and_glob_of_many_files(tmp_path, client):
    src = shared_path("classification/sdss_dr14_5k_dev.csv")
    ref = pd.read_csv(src)
    result = _import(client, [src], tmp_path / "sdss", id_column="specobjid", max_rows=500)
    frame = open_catalog(result.out).compute()
    assert len(frame) == len(ref)
    for col, typ in ref.dtypes.items():  # types as in the file (specobjid is written as a float there)
        if typ.kind in "if":
            assert frame[col].dtype == typ, col
    assert sorted(frame["specobjid"]) == sorted(ref["specobjid"])
    assert (frame.groupby("class").size().sort_index() == ref.groupby("class").size().sort_index()).all()
    # the same rows split into three CSV files, read through a glob, give the same catalog
    for k, part in enumerate(_split_frame(ref, 3)):
        part.to_csv(tmp_path / f"piece_{k}.csv", index=False)
    result2 = _import(
        client, [tmp_path / "piece_*.csv"], tmp_path / "sdss_glob", id_column="specobjid", max_rows=500
    )
    frame2 = open_catalog(result2.out).compute()
    pd.testing.assert_frame_equal(frame.reset_index(), frame2.reset_index())


def test_ra_wrapping_is_normalised_and_counted(tmp_path, client):
    """Blanco 1 DR2 stores RA in [-2, 3.8]: negative RAs are wrapped into [0, 360)."""
    src = shared_path("clusters_xmatch/blanco1/blanco1_gaia_dr2_G18_field.parquet")
    ref = pd.read_parquet(src)
    result = _import(client, [src], tmp_path / "b1", id_column="source_id", max_rows=2000)
    assert result.wrapped_ra == int((ref.ra < 0).sum()) > 0
    frame = open_catalog(result.out).compute().set_index("source_id").loc[ref.source_id]
    assert np.allclose(frame.ra.to_numpy(), ref.ra.to_numpy() % 360.0)
    assert frame.ra.min() >= 0 and frame.ra.max() < 360


def test_rerun_is_a_no_op_and_different_catalog_is_refused(tmp_path, client):
    df = random_sky(20_000)
    src = tmp_path / "a.parquet"
    df.to_parquet(src)
    out = tmp_path / "cat"
    first = _import(client, [src], out, max_rows=2000)
    assert not first.up_to_date
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}
    again = _import(client, [src], out, max_rows=2000)
    assert again.up_to_date
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}
    with pytest.raises(InputError, match="already holds a different catalog"):
        _import(client, [src], out, max_rows=3000)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="already holds other files"):
        _import(client, [src], tmp_path / "other")


def _catalog_digest(path):
    frame = open_catalog(path).compute().reset_index()
    return pd.util.hash_pandas_object(frame, index=False).sum(), len(frame)


@pytest.mark.slow
def test_kill_minus_9_then_resume_gives_identical_catalog(tmp_path):
    """A real import in a subprocess is killed mid-way; re-running the command completes it identically."""
    df = random_sky(1_500_000, seed=4)
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    for k, part in enumerate(_split_frame(df, 6)):
        part.to_parquet(src_dir / f"p{k}.parquet", row_group_size=50_000)
    out = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "survey_engine.cli",
        "import",
        str(src_dir),
        "--out",
        str(out),
        "--id",
        "id",
        "--max-rows",
        "20000",
        "--margin",
        "10",
        "--workers",
        "2",
        "--no-progress",
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    staging = tmp_path / "killed.partial"
    deadline = time.time() + 120
    # kill once the split step has produced shard files but before the catalog is published
    while time.time() < deadline and proc.poll() is None:
        if staging.exists() and any((staging / "shards").glob("*.index.npz")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "import finished before it could be killed; make the input larger"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists() or not any(out.iterdir()), (
        "a killed import must not leave a catalog that looks complete"
    )
    assert staging.exists()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resumed" in done.stdout
    assert not staging.exists()
    fresh = tmp_path / "fresh"
    subprocess.run(
        [*cmd[:5], str(src_dir), "--out", str(fresh), *cmd[7:]],
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    assert _catalog_digest(out) == _catalog_digest(fresh)
    assert _catalog_digest(out)[1] == len(df)
    m_out = open_catalog(out).margin.compute().reset_index()
    m_fresh = open_catalog(fresh).margin.compute().reset_index()
    pd.testing.assert_frame_equal(m_out, m_fresh)


def test_a_split_task_of_a_failed_import_writes_nothing_into_the_next_import(tmp_path, threads, monkeypatch):
    """The next import into the same ``--out`` with other arguments starts over in ``OUT.partial``
    while a split task of the failed one still runs: that task's shard (the first import's partition
    plan) must not land there, where the new import would take it for its own finished shard and
    place the chunk's rows in the wrong partitions (the row count would still agree)."""
    from survey_engine.catalog import build
    from survey_engine.ingest.file_import import run as import_run

    src = []  # four files: four split tasks
    for i, part in enumerate(_split_frame(random_sky(20_000, seed=5), 4)):
        src.append(tmp_path / f"sky{i}.parquet")
        part.to_parquet(src[-1])
    real_split = build.split_batches  # what each split task calls (the task itself is sent pickled)
    late = LateTask(real_split, lambda args: OSError(28, "No space left on device", str(args[2])))
    monkeypatch.setattr(build, "split_batches", late)
    out = tmp_path / "cat"
    with pytest.raises(InputError, match="no space left on device"):
        _import(threads, src, out, max_rows=4_000)
    assert not late.ended.is_set()  # still running on its worker thread

    monkeypatch.setattr(build, "split_batches", real_split)
    real_stage = import_run._split

    def late_task_writes_first(*args, **kw):
        late.let_go()  # started over, claimed, histograms done; no shard of its own yet
        return real_stage(*args, **kw)

    monkeypatch.setattr(import_run, "_split", late_task_writes_first)
    result = _import(threads, src, out, max_rows=500)
    assert len(late.raised) == 1 and "now belongs to another write" in str(late.raised[0])
    assert not result.resumed
    monkeypatch.setattr(import_run, "_split", real_stage)
    fresh = _import(threads, src, tmp_path / "fresh", max_rows=500)

    def by_partition(path):
        files = open_catalog(path).files_by_pixel()
        return {px: np.sort(pq.read_table(f, columns=["id"])["id"].to_numpy()) for px, f in files.items()}

    got, want = by_partition(result.out), by_partition(fresh.out)
    assert sorted(got) == sorted(want)
    assert all(np.array_equal(got[k], want[k]) for k in want)
