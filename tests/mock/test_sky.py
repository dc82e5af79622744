import numpy as np
import pandas as pd
import pytest

from survey_engine.mock.sky import CLUSTERS, block_sizes, generate_block, icrs_to_galactic, write_mock_sky


def test_same_seed_same_sky_and_different_seed_differs():
    a = generate_block(7, 3, 20_000)
    b = generate_block(7, 3, 20_000)
    c = generate_block(8, 3, 20_000)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a.ra.to_numpy(), c.ra.to_numpy())


def test_write_is_deterministic_whatever_the_workers(tmp_path, client):
    files1 = write_mock_sky(600_000, tmp_path / "one", seed=5, client=client, progress=False)
    files2 = write_mock_sky(600_000, tmp_path / "two", seed=5, client=client, progress=False)
    assert len(files1) == len(block_sizes(600_000)) == 3
    d1 = pd.concat(pd.read_parquet(f) for f in files1)
    d2 = pd.concat(pd.read_parquet(f) for f in files2)
    assert len(d1) == 600_000
    pd.testing.assert_frame_equal(d1, d2)
    assert d1.source_id.is_unique
    with pytest.raises(FileExistsError):
        write_mock_sky(10, tmp_path / "one", seed=6, client=client, progress=False)


def test_sky_is_astrophysically_sensible():
    df = generate_block(1, 0, 200_000)
    frac = df.obj_class.value_counts(normalize=True)
    assert 0.5 < frac["STAR"] < 0.6 and 0.33 < frac["GALAXY"] < 0.43 and 0.05 < frac["QSO"] < 0.09
    stars = df[df.obj_class == "STAR"]
    # stars crowd toward the Galactic plane: |b| < 10 deg is 17% of the sky
    assert (np.abs(stars.b) < 10).mean() > 0.35
    # the stellar locus: u-g rises with g-r for blue stars
    bright = stars[stars.r < 20]
    assert np.corrcoef(bright.g - bright.r, bright.u - bright.g)[0, 1] > 0.6
    # galaxy colours carry redshift: g-r reddens up to z ~ 0.4, then r-i takes over
    gal = df[(df.obj_class == "GALAXY") & (df.r < 21)]
    lo, mid, hi = (
        gal[gal.redshift < 0.1],
        gal[(gal.redshift > 0.3) & (gal.redshift < 0.45)],
        gal[gal.redshift > 0.6],
    )
    assert (mid.g - mid.r).median() > (lo.g - lo.r).median() - 0.2
    assert (hi.r - hi.i).median() > (mid.r - mid.i).median() + 0.1
    # QSOs are at higher redshift than galaxies; stars have none
    assert df[df.obj_class == "QSO"].redshift.median() > 1.0 and (stars.redshift == 0).all()
    # stars have parallaxes, extragalactic sources scatter around zero
    assert stars.parallax.median() > 0.2
    assert abs(df[df.obj_class == "QSO"].parallax.median()) < 0.05
    # magnitudes are finite, errors grow toward faint magnitudes
    mags = df[["u", "g", "r", "i", "z"]].to_numpy()
    assert np.isfinite(mags).all()
    assert df[df.r > 22].r_err.median() > df[df.r < 18].r_err.median()


def test_open_clusters_share_distance_and_motion():
    df = generate_block(2, 0, 250_000)
    for cid, cl in enumerate(CLUSTERS):
        members = df[df.cluster_id == cid]
        assert len(members) > 100
        l, b = icrs_to_galactic(members.ra.to_numpy(), members.dec.to_numpy())
        assert abs(np.median(b) - cl.b) < 0.3
        good = members[members.parallax_error < 0.1]
        assert abs(good.parallax.median() - 1000 / cl.distance_pc) < 0.1
        assert abs(good.pmra.median() - cl.pmra) < 0.3 and good.pmra.std() < 1.0


def test_no_two_rows_share_a_position():
    df = generate_block(4, 0, 250_000)
    assert not df.duplicated(["ra", "dec"]).any()


def test_a_late_task_of_an_earlier_write_puts_no_block_in_the_folder(tmp_path):
    """The folder is claimed per write (``mock_folder``): a block task of a write the next one has
    replaced is refused before it renames its file in, and leaves no temporary behind; a killed
    writer's temporaries are removed when the next write of the same sky resumes."""
    from survey_engine.catalog.owner import AbandonedWriteError
    from survey_engine.mock.sky import _write_block, mock_folder

    out = tmp_path / "sky"
    spec = {"rows": 30, "seed": 1}
    with mock_folder(out, spec, "mock sky") as first:
        pass
    (out / ".part-00003.parquet.tmp-123-abcdef01").write_bytes(b"half a file")  # a killed writer's
    with mock_folder(out, spec, "mock sky") as second:
        assert not list(out.glob(".*tmp-*"))
        with pytest.raises(AbandonedWriteError):
            _write_block(generate_block, 1, 0, 30, str(out), first)
        assert sorted(p.name for p in out.iterdir()) == [".owner", "mock.json"]
        assert _write_block(generate_block, 1, 0, 30, str(out), second) == 30
    assert sorted(p.name for p in out.iterdir()) == ["mock.json", "part-00000.parquet"]
    assert not (tmp_path / "sky.lock").exists()
    with pytest.raises(FileExistsError, match="mock sky with other arguments"):
        with mock_folder(out, {"rows": 31, "seed": 1}, "mock sky"):
            pass
    with mock_folder(out, spec, "mock sky"):  # a lost worker's temporary, its task run again elsewhere
        (out / ".part-00001.parquet.tmp-77-abcdef02").write_bytes(b"half")
    assert sorted(p.name for p in out.iterdir()) == ["mock.json", "part-00000.parquet"]
    killed = tmp_path / "killed"  # killed while writing its manifest: the same write starts it again
    killed.mkdir()
    (killed / ".mock.json.tmp-9-abcdef03").write_text("{")
    with mock_folder(killed, spec, "mock sky"):
        pass
    assert [p.name for p in killed.iterdir()] == ["mock.json"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already holds other files"):
        with mock_folder(tmp_path / "other", spec, "mock sky"):
            pass
