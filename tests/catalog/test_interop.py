"""Interoperability both ways: our collections open in hats and LSDB; hats-import's open in ours."""

import logging

import numpy as np
import pandas as pd
import pytest

from survey_engine import open_catalog
from tests.conftest import shared_path


@pytest.mark.slow
def test_our_collection_is_valid_hats_and_opens_in_lsdb(gaia_allsky, gaia_allsky_collection, caplog):
    import hats
    import lsdb
    from hats.io.validation import is_valid_catalog

    with caplog.at_level(logging.WARNING):
        assert is_valid_catalog(gaia_allsky_collection, strict=True)
        for sub in gaia_allsky_collection.iterdir():
            if sub.is_dir():
                assert is_valid_catalog(sub, strict=True), sub
    from hats.io.file_io import read_fits_image

    point_map = read_fits_image(gaia_allsky_collection / "gaia_g10" / "point_map.fits")
    assert len(point_map) == 12 * 4**10 and point_map.sum() == len(gaia_allsky)
    from survey_engine.catalog.layout import read_point_map

    assert np.array_equal(read_point_map(gaia_allsky_collection / "gaia_g10"), point_map)
    collection = hats.read_hats(gaia_allsky_collection)
    assert collection.main_catalog.catalog_info.total_rows == len(gaia_allsky)
    assert collection.main_catalog.catalog_info.ra_column == "ra"
    lcat = lsdb.open_catalog(gaia_allsky_collection)
    assert lcat.margin is not None
    assert lcat.margin.hc_structure.catalog_info.margin_threshold == 60.0
    frame = lcat.compute()
    assert len(frame) == len(gaia_allsky)
    ours = open_catalog(gaia_allsky_collection).compute()
    a = frame.reset_index().sort_values("source_id").reset_index(drop=True)
    b = ours.reset_index().sort_values("source_id").reset_index(drop=True)
    for col in ("_healpix_29", "source_id", "ra", "dec", "phot_g_mean_mag"):
        assert np.array_equal(a[col].to_numpy(), b[col].to_numpy()), col
    assert len(lcat.margin.compute()) == len(open_catalog(gaia_allsky_collection).margin.compute())


@pytest.mark.slow
def test_lsdb_crossmatch_with_our_margin_finds_all_pairs(gaia_allsky_collection):
    """LSDB uses our margin cache in its own cross-match: a self-match within 60 arcsec finds every row."""
    import lsdb

    left = lsdb.open_catalog(gaia_allsky_collection).cone_search(45, 0, 3 * 3600)
    right = lsdb.open_catalog(gaia_allsky_collection)
    matched = left.crossmatch(right, radius_arcsec=1.0, n_neighbors=1, suffixes=("_l", "_r")).compute()
    assert len(matched) == len(left.compute())
    assert (matched["source_id_l"] == matched["source_id_r"]).all()


@pytest.mark.slow
def test_hats_import_collection_opens_in_survey_engine(tmp_path, client):
    from hats_import.collection.arguments import CollectionArguments
    from hats_import.pipeline import pipeline_with_client

    src = shared_path("clusters_xmatch/blanco1/blanco1_gaia_dr3_G17_field.parquet")
    df = pd.read_parquet(src)
    args = (
        CollectionArguments(output_artifact_name="blanco1", output_path=str(tmp_path), progress_bar=False)
        .catalog(
            input_file_list=[str(src)],
            file_reader="parquet",
            ra_column="ra",
            dec_column="dec",
            pixel_threshold=2000,
            highest_healpix_order=8,
        )
        .add_margin(margin_threshold=10.0)
    )
    pipeline_with_client(args, client)
    cat = open_catalog(tmp_path / "blanco1")
    assert cat.row_count() == len(df)
    assert cat.margin is not None and cat.margin_radius_arcsec == 10.0
    frame = cat.compute()
    assert sorted(frame["SOURCE_ID"]) == sorted(df["SOURCE_ID"])
    merged = df.set_index("SOURCE_ID").loc[frame["SOURCE_ID"]]
    assert np.array_equal(frame["pmra"].to_numpy(), merged["pmra"].to_numpy())
    # selections work on a hats-import catalog too (the field straddles RA 0)
    cone = cat.cone_search(0.0, -30.0, 1800).compute()
    from survey_engine.catalog.healpix import angular_separation_deg

    sep = angular_separation_deg(df.ra, df.dec, 0.0, -30.0) * 3600
    assert set(cone["SOURCE_ID"]) == set(df.SOURCE_ID[sep <= 1800])
    # a plain hats-import catalog (not the collection) opens too
    assert open_catalog(tmp_path / "blanco1" / "blanco1").row_count() == len(df)
    # and cross-matching works on it, with its own margin: a self-match within 10" (the margin's
    # width) excluding each row itself equals astropy's brute force over the whole field (each
    # close pair listed once)
    import astropy.units as u
    from astropy.coordinates import SkyCoord, search_around_sky

    pairs = cat.crossmatch(
        cat, 10.0, how="all", exclude_self=True, left_columns=["SOURCE_ID"], right_columns=["SOURCE_ID"]
    ).compute()
    coords = SkyCoord(df.ra.to_numpy() * u.deg, df.dec.to_numpy() * u.deg)
    i, j, _, _ = search_around_sky(coords, coords, 10.0 * u.arcsec)
    ids = df.SOURCE_ID.to_numpy()
    truth = {(a, b) for a, b in zip(ids[i], ids[j]) if a != b}
    assert len(truth) > 100
    assert {frozenset(p) for p in zip(pairs.SOURCE_ID_1, pairs.SOURCE_ID_2)} == {frozenset(p) for p in truth}
    assert 2 * len(pairs) == len(truth)
