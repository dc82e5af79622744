"""Two surveys of one mock sky: cut from the same blocks, deterministic, at their own epochs."""

import numpy as np
import pandas as pd
import pytest

from survey_engine.crossmatch.epochs import propagate
from survey_engine.mock.sky import generate_block
from survey_engine.mock.surveys import (
    G_LIMIT,
    OBJID_BASE,
    R_LIMIT,
    SPEC_FOOTPRINT,
    survey_block,
    write_survey,
)


@pytest.fixture(scope="module")
def block():
    return (
        generate_block(7, 0, 60_000),
        survey_block("astrometric", 7, 0, 60_000),
        survey_block("photometric", 7, 0, 60_000),
    )


def test_surveys_are_cuts_of_the_same_sky(block):
    sky, gaia, sdss = block
    assert (
        len(gaia) == int(np.isfinite(sky.phot_g_mean_mag).sum())
        and (gaia.phot_g_mean_mag < G_LIMIT + 0.1).all()
    )
    assert len(sdss) == int((sky.r < R_LIMIT).sum())
    assert gaia.source_id.is_unique and sdss.objid.is_unique
    assert {"parallax", "pmra", "pmdec", "phot_bp_mean_mag", "phot_rp_mean_mag", "ref_epoch"} <= set(
        gaia.columns
    )
    assert {"u", "g", "r", "i", "z", "u_err", "z_err", "z_spec", "spec_class"} <= set(sdss.columns)
    assert "pmra" not in sdss.columns and "u" not in gaia.columns
    # the same seed gives the same surveys
    pd.testing.assert_frame_equal(sdss, survey_block("photometric", 7, 0, 60_000))


def test_photometric_positions_are_at_2005(block):
    sky, gaia, sdss = block
    # both keep the sky row: the low 20 bits of source_id, the low 24 bits of objid
    gaia_row = gaia.source_id.to_numpy() & (2**20 - 1)
    sdss_row = (sdss.objid.to_numpy() - OBJID_BASE) & (2**24 - 1)
    both = pd.DataFrame({"row": gaia_row, "gi": np.arange(len(gaia))}).merge(
        pd.DataFrame({"row": sdss_row, "si": np.arange(len(sdss))})
    )
    g, s = gaia.iloc[both.gi.to_numpy()], sdss.iloc[both.si.to_numpy()]
    assert len(both) > 10_000
    ra16, dec16 = propagate(
        s.ra.to_numpy(), s.dec.to_numpy(), g.pmra.to_numpy(), g.pmdec.to_numpy(), 2005.0, 2016.0
    )

    def sep(ra1, dec1, ra2, dec2):
        from survey_engine.catalog.healpix import angular_separation_deg

        return angular_separation_deg(ra1, dec1, ra2, dec2) * 3600

    moved = sep(ra16, dec16, g.ra.to_numpy(), g.dec.to_numpy())
    as_observed = sep(s.ra.to_numpy(), s.dec.to_numpy(), g.ra.to_numpy(), g.dec.to_numpy())
    assert np.quantile(moved, 0.999) < 0.35  # only the 0.05" measurement noise is left
    fast = np.hypot(g.pmra, g.pmdec).to_numpy() > 100  # > 1.1" in 11 years
    assert fast.sum() > 0 and (as_observed[fast] > 1.0).all() and (moved[fast] < 0.35).all()


def test_spectra_only_inside_the_footprint(block):
    _, _, sdss = block
    has = sdss.z_spec.notna()
    assert has.sum() > 500 and (sdss.spec_class.notna() == has).all()
    inside = sdss.ra.between(*SPEC_FOOTPRINT["ra"]) & sdss.dec.between(*SPEC_FOOTPRINT["dec"])
    assert inside[has].all() and set(sdss.spec_class[has]) == {"GALAXY", "QSO", "STAR"}
    gal = has & (sdss.spec_class == "GALAXY")
    assert (sdss.r[gal] < 21.5).all() and np.allclose(sdss.z_spec[gal], sdss.true_redshift[gal], atol=3e-4)


def test_write_survey_is_resumable_and_refuses_another(tmp_path, client):
    out = tmp_path / "gaia"
    n = write_survey("astrometric", 30_000, out, seed=3, client=client, progress=False)
    assert (
        n
        == len(pd.read_parquet(out / "part-00000.parquet"))
        == len(survey_block("astrometric", 3, 0, 30_000))
    )
    assert write_survey("astrometric", 30_000, out, seed=3, client=client, progress=False) == n
    with pytest.raises(FileExistsError, match="another|other"):
        write_survey("photometric", 30_000, out, seed=3, client=client, progress=False)


def test_cli_writes_a_survey(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "survey_engine.cli",
            "mock",
            "--rows",
            "20000",
            "--survey",
            "photometric",
            "--out",
            str(tmp_path / "sdss"),
            "--workers",
            "1",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    frame = pd.read_parquet(tmp_path / "sdss" / "part-00000.parquet")
    assert f"{len(frame):,} rows" in proc.stdout and "objid" in frame.columns
    pd.testing.assert_frame_equal(frame, survey_block("photometric", 42, 0, 20_000))
