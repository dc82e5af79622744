"""Margins equal a brute-force selection: at the poles, across RA 0/360 and between orders."""

import numpy as np
import pandas as pd
import pytest

from survey_engine import open_catalog
from survey_engine.catalog.healpix import radec_to_healpix
from survey_engine.ingest.file_import.arguments import ImportArguments
from survey_engine.ingest.file_import.run import run_import
from tests.catalog.brute import brute_margin, edge_stress_sky


def _margin_pairs(collection, id_col="id"):
    """{(id, partition index)} of the margin catalog, and the main catalog's partitions."""
    cat = open_catalog(collection)
    parts = list(zip(cat.partitions.Norder.tolist(), cat.partitions.Npix.tolist()))
    index = {p: i for i, p in enumerate(parts)}
    pairs = set()
    for (order, pix), f in zip(
        zip(cat.margin.partitions.Norder, cat.margin.partitions.Npix), cat.margin.partition_files()
    ):
        if (int(order), int(pix)) not in index:
            continue  # the margin of a pixel no partition covers: test_margins_of_pixels_no_partition_covers
        ids = pd.read_parquet(f, columns=[id_col])[id_col].to_numpy()
        pairs.update((int(i), index[(int(order), int(pix))]) for i in ids)
    return cat, parts, pairs


def _compare(df, cat, parts, pairs, radius, spacing):
    hp29 = radec_to_healpix(df.ra.to_numpy(), df.dec.to_numpy())
    starts = np.array([p << (2 * (29 - o)) for o, p in parts])
    own = np.searchsorted(starts, hp29, side="right") - 1
    own_order = np.array([parts[i][0] for i in own])
    own_pix = np.array([parts[i][1] for i in own])
    brute = brute_margin(df.ra.to_numpy(), df.dec.to_numpy(), own_order, own_pix, parts, radius, spacing)
    row_to_id = df.id.to_numpy()
    certain = {(int(row_to_id[r]), p) for (r, p), d in brute.items() if d <= radius - spacing}
    possible = {(int(row_to_id[r]), p) for (r, p), d in brute.items()}
    assert certain, "the test catalog must put rows in margins"
    missing = certain - pairs
    extra = pairs - possible
    assert not missing, (
        f"{len(missing)} rows within the radius are missing from margins, e.g. {sorted(missing)[:5]}"
    )
    assert not extra, f"{len(extra)} margin rows are farther than the radius, e.g. {sorted(extra)[:5]}"
    return len(certain)


@pytest.mark.slow
def test_margins_equal_brute_force_at_poles_wrap_and_mixed_orders(tmp_path, client):
    df = edge_stress_sky()
    src = tmp_path / "edge.parquet"
    df.to_parquet(src)
    radius = 30.0
    out = tmp_path / "edge_cat"
    run_import(
        ImportArguments(
            [str(src)], str(out), id_column="id", max_rows=800, highest_order=6, margin_arcsec=radius
        ),
        client=client,
        progress=False,
    )
    cat, parts, pairs = _margin_pairs(out)
    orders = {o for o, _ in parts}
    assert len(orders) >= 3, orders  # neighbouring partitions of different orders
    n = _compare(df, cat, parts, pairs, radius, spacing=0.5)
    assert n > 1000
    # margin rows carry the same columns and values as the main rows they copy
    main = cat.compute().set_index("id")
    margin = cat.margin.compute().set_index("id")
    assert np.allclose(main.loc[margin.index, "flux"], margin["flux"])


@pytest.mark.slow
def test_margin_on_real_allsky_gaia(gaia_allsky, gaia_allsky_collection):
    cat, parts, pairs = _margin_pairs(gaia_allsky_collection, "source_id")
    df = gaia_allsky.rename(columns={"source_id": "id"})
    n = _compare(df, cat, parts, pairs, 60.0, spacing=1.0)
    assert n > 100


@pytest.mark.slow
def test_margin_built_later_equals_margin_built_at_import(tmp_path, client):
    from survey_engine.catalog.margin_build import build_margin

    df = edge_stress_sky(n_background=5000, seed=9)
    src = tmp_path / "e.parquet"
    df.to_parquet(src)
    with_margin = tmp_path / "a"
    without = tmp_path / "b"
    run_import(
        ImportArguments([str(src)], str(with_margin), id_column="id", max_rows=500, margin_arcsec=20),
        client=client,
        progress=False,
    )
    run_import(
        ImportArguments([str(src)], str(without), id_column="id", max_rows=500, margin_arcsec=0),
        client=client,
        progress=False,
    )
    assert open_catalog(without).margin is None
    path = build_margin(without, 20, client=client, progress=False)
    assert path.exists()
    a = open_catalog(with_margin).margin.compute().sort_values(["id"]).reset_index()
    b = open_catalog(without).margin.compute().sort_values(["id"]).reset_index()
    assert len(a) > 0
    pd.testing.assert_frame_equal(a, b)
    with pytest.raises(FileExistsError):
        build_margin(without, 20, client=client, progress=False)


def _patch(n: int, half_width: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "id": np.arange(n, dtype=np.int64),
            "ra": rng.uniform(45 - half_width, 45 + half_width, n),
            "dec": rng.uniform(-half_width, half_width, n),
        }
    )


@pytest.mark.slow
def test_margins_of_pixels_no_partition_covers(tmp_path, client):
    """As hats-import does, the margin has partitions for the empty sky around a catalog (its
    negative tree), so a peer matching a catalog of its own there against ours finds every pair."""
    import lsdb
    from hats.pixel_math import HealpixPixel
    from hats.pixel_tree.negative_tree import compute_negative_tree_pixels
    from hats.pixel_tree.pixel_tree import PixelTree

    from survey_engine.catalog.margins import uncovered_pixels

    radius = 900.0  # wider than the gap between the patch's edge and its partitions' edges
    right_df = _patch(3000, 0.5, seed=5)
    src = tmp_path / "right.parquet"
    right_df.to_parquet(src)
    right = tmp_path / "right"
    run_import(
        ImportArguments(
            [str(src)], str(right), id_column="id", max_rows=200, highest_order=8, margin_arcsec=radius
        ),
        client=client,
        progress=False,
    )
    cat = open_catalog(right)
    parts = list(zip(cat.partitions.Norder.tolist(), cat.partitions.Npix.tolist()))
    neg = list(
        zip(
            *(
                a.tolist()
                for a in uncovered_pixels(cat.partitions.Norder.to_numpy(), cat.partitions.Npix.to_numpy())
            )
        )
    )
    tree = PixelTree.from_healpix([HealpixPixel(o, p) for o, p in parts])
    assert sorted(neg) == sorted((q.order, q.pixel) for q in compute_negative_tree_pixels(tree))
    margin_parts = set(zip(cat.margin.partitions.Norder.tolist(), cat.margin.partitions.Npix.tolist()))
    outside = margin_parts - set(parts)
    assert outside and outside <= set(neg)
    # every margin row of every target (partitions and empty pixels) equals brute force
    targets = parts + neg
    index = {t: i for i, t in enumerate(targets)}
    ours = set()
    for (order, pix), f in zip(
        zip(cat.margin.partitions.Norder, cat.margin.partitions.Npix), cat.margin.partition_files()
    ):
        ours.update((int(i), index[(int(order), int(pix))]) for i in pd.read_parquet(f, columns=["id"])["id"])
    hp29 = radec_to_healpix(right_df.ra.to_numpy(), right_df.dec.to_numpy())
    starts = np.array([p << (2 * (29 - o)) for o, p in parts])
    own = np.searchsorted(starts, hp29, side="right") - 1
    brute = brute_margin(
        right_df.ra.to_numpy(),
        right_df.dec.to_numpy(),
        np.array([parts[i][0] for i in own]),
        np.array([parts[i][1] for i in own]),
        targets,
        radius,
        5.0,
    )
    certain = {(r, t) for (r, t), d in brute.items() if d <= radius - 5.0}
    assert {t for _, t in certain if t >= len(parts)}, "rows must lie near empty pixels"
    assert certain <= ours <= set(brute)
    # LSDB cross-matching a wider patch against ours finds every pair brute force finds
    left_df = _patch(600, 0.75, seed=6)
    lsrc = tmp_path / "left.parquet"
    left_df.to_parquet(lsrc)
    left = tmp_path / "left"
    run_import(
        ImportArguments(
            [str(lsrc)], str(left), id_column="id", max_rows=60, highest_order=8, margin_arcsec=0
        ),
        client=client,
        progress=False,
    )
    from astropy.coordinates import SkyCoord

    lc = SkyCoord(left_df.ra.to_numpy(), left_df.dec.to_numpy(), unit="deg")
    rc = SkyCoord(right_df.ra.to_numpy(), right_df.dec.to_numpy(), unit="deg")
    _, sep, _ = lc.match_to_catalog_sky(rc)
    want = set(left_df.id[sep.arcsec <= radius])
    got = (
        lsdb.open_catalog(left)
        .crossmatch(lsdb.open_catalog(right), radius_arcsec=radius, n_neighbors=1, suffixes=("_l", "_r"))
        .compute()
    )
    assert set(got["id_l"]) == want
