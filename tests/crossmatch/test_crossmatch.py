"""Cross-match exactness against astropy brute force, at poles, RA 0/360 and every partition edge."""

import astropy.units as u
import numpy as np
import pandas as pd
import pytest
from astropy.coordinates import SkyCoord, match_coordinates_sky, search_around_sky

from survey_engine import open_catalog
from survey_engine.crossmatch import MarginTooSmallError, crossmatch
from survey_engine.ingest.file_import.arguments import ImportArguments
from survey_engine.ingest.file_import.run import run_import
from tests.catalog.brute import edge_stress_sky
from tests.conftest import shared_path


def _jittered(a: pd.DataFrame, frac: float, sigma_arcsec: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    b = a.sample(frac=frac, random_state=seed).reset_index(drop=True)
    cosd = np.maximum(np.cos(np.radians(b.dec.to_numpy())), 1e-3)
    b["ra"] = (b.ra + rng.normal(0, sigma_arcsec / 3600, len(b)) / cosd) % 360
    b["dec"] = np.clip(b.dec + rng.normal(0, sigma_arcsec / 3600, len(b)), -90, 90)
    extra = edge_stress_sky(3000, seed=seed + 100).iloc[:5000]
    b = pd.concat([b, extra], ignore_index=True)
    b["id"] = np.arange(len(b)) + 10_000_000
    return b


@pytest.fixture(scope="module")
def edge_pair(tmp_path_factory, client):
    """Left and right catalogs at different partition orders, dense on borders, poles and RA 0."""
    root = tmp_path_factory.mktemp("xm")
    a = edge_stress_sky(15_000, seed=11)
    b = _jittered(a, 0.85, 1.5, seed=12)
    for name, df, max_rows in (("left", a, 400), ("right", b, 1500)):
        df.to_parquet(root / f"{name}.parquet")
        run_import(
            ImportArguments(
                [str(root / f"{name}.parquet")],
                str(root / name),
                id_column="id",
                max_rows=max_rows,
                margin_arcsec=12,
            ),
            client=client,
            progress=False,
        )
    return a, b, open_catalog(root / "left"), open_catalog(root / "right"), root


def _truth_all(a, b, radius):
    ca = SkyCoord(a.ra.values * u.deg, a.dec.values * u.deg)
    cb = SkyCoord(b.ra.values * u.deg, b.dec.values * u.deg)
    ia, ib, sep, _ = search_around_sky(ca, cb, radius * u.arcsec)
    return pd.DataFrame({"id_1": a.id.values[ia], "id_2": b.id.values[ib], "sep": sep.arcsec})


def test_partitionings_differ(edge_pair):
    _, _, left, right, _ = edge_pair
    assert set(left.partitions.Norder) != set(right.partitions.Norder)


def test_nearest_equals_brute_force(edge_pair):
    a, b, left, right, _ = edge_pair
    got = crossmatch(left, right, 10.0).compute()
    truth = _truth_all(a, b, 10.0).sort_values(["id_1", "sep", "id_2"]).drop_duplicates("id_1")
    assert len(truth) > 10_000
    assert set(zip(got.id_1, got.id_2)) == set(zip(truth.id_1, truth.id_2))
    merged = got.set_index("id_1").loc[truth.id_1]
    assert np.allclose(merged.sep_arcsec.to_numpy(), truth.sep.to_numpy(), atol=1e-6)
    # projecting columns gives the same pairs and only the asked columns (plus coordinates)
    slim = crossmatch(left, right, 10.0, left_columns=["id"], right_columns=["id"]).compute()
    assert set(zip(slim.id_1, slim.id_2)) == set(zip(got.id_1, got.id_2))
    assert "flux_1" not in slim.columns and {"ra_1", "dec_2", "sep_arcsec"} <= set(slim.columns)


def test_a_small_target_list_reads_only_the_right_partitions_it_touches(
    edge_pair, tmp_path, client, monkeypatch
):
    """300 targets in one 2-degree cell against the whole right catalog: the tasks open exactly
    the right partitions that contain a target, and their margins - no other file, although the
    target list's one partition spans a twelfth of the sky - and the pairs equal brute force."""
    import survey_engine.crossmatch.match as xm
    from survey_engine.catalog.healpix import radec_to_healpix
    from survey_engine.catalog.layout import partition_path

    a, b, _, right, _ = edge_pair
    cell = radec_to_healpix(b.ra.to_numpy(), b.dec.to_numpy(), 5)
    patch = b[cell == np.bincount(cell).argmax()]  # the densest 2-degree cell
    targets = patch.sample(n=min(300, len(patch)), random_state=3)[["ra", "dec"]].reset_index(drop=True)
    targets.insert(0, "id", np.arange(len(targets)))
    targets.to_parquet(tmp_path / "targets.parquet")
    run_import(
        ImportArguments([str(tmp_path / "targets.parquet")], str(tmp_path / "targets"), id_column="id"),
        client=client,
        progress=False,
    )
    target_list = open_catalog(tmp_path / "targets")
    assert len(targets) >= 100 and len(target_list.partitions) == 1 and len(right.partitions) > 20

    read: list[str] = []
    import survey_engine.crossmatch.tasks as tasks  # where a match task reads its rows

    original = tasks.read_side
    monkeypatch.setattr(
        tasks,
        "read_side",
        lambda files, *args, **kwargs: (read.extend(map(str, files)), original(files, *args, **kwargs))[1],
    )
    result = crossmatch(target_list, right, 10.0)
    local = pd.concat(
        [xm.match_task(*call) for call in result.task_calls()]
    )  # in this process, to see its reads

    touched = [
        (int(o), int(p))
        for o, p in zip(right.partitions.Norder, right.partitions.Npix)
        if np.any(radec_to_healpix(targets.ra.to_numpy(), targets.dec.to_numpy(), int(o)) == int(p))
    ]
    margins = {(int(o), int(p)) for o, p in zip(right.margin.partitions.Norder, right.margin.partitions.Npix)}
    expected = {str(partition_path(right.path, o, p)) for o, p in touched}
    expected |= {str(partition_path(right.margin.path, o, p)) for o, p in touched if (o, p) in margins}
    right_reads = set(read) - {str(f) for f in target_list.partition_files()}
    assert right_reads == expected
    assert len(touched) <= 4 < len(right.partitions) / 5
    truth = _truth_all(targets, b, 10.0).sort_values(["id_1", "sep", "id_2"]).drop_duplicates("id_1")
    got = result.compute()
    assert (
        set(zip(got.id_1, got.id_2)) == set(zip(truth.id_1, truth.id_2)) == set(zip(local.id_1, local.id_2))
    )


@pytest.mark.slow
def test_all_pairs_and_knn_equal_brute_force(edge_pair):
    a, b, left, right, _ = edge_pair
    truth = _truth_all(a, b, 10.0)
    got = crossmatch(left, right, 10.0, how="all").compute()
    assert len(got) == len(truth)
    assert set(zip(got.id_1, got.id_2)) == set(zip(truth.id_1, truth.id_2))
    got3 = crossmatch(left, right, 10.0, how="knn", k=3).compute()
    t3 = truth.sort_values(["id_1", "sep", "id_2"]).groupby("id_1").head(3)
    assert set(zip(got3.id_1, got3.id_2)) == set(zip(t3.id_1, t3.id_2))
    assert got3.groupby("id_1").size().max() <= 3


@pytest.mark.slow
def test_duplicated_right_rows_break_ties_by_catalog_order(tmp_path, client):
    """Right rows at identical positions (duplicated sources) are equally near: the documented
    tie-break (right _healpix_29, then order in its partition) picks one, the same every time."""
    rng = np.random.default_rng(5)
    a = edge_stress_sky(3000, seed=21)
    b = _jittered(a, 1.0, 0.5, seed=22)
    dup = b.sample(600, random_state=3)
    b = (
        pd.concat([b, dup, dup.iloc[:200]], ignore_index=True)
        .sample(frac=1.0, random_state=4)
        .reset_index(drop=True)
    )
    b["id"] = rng.permutation(len(b)) + 10_000_000
    for name, df, max_rows in (("left", a, 300), ("right", b, 900)):
        df.to_parquet(tmp_path / f"{name}.parquet")
        run_import(
            ImportArguments(
                [str(tmp_path / f"{name}.parquet")],
                str(tmp_path / name),
                id_column="id",
                max_rows=max_rows,
                margin_arcsec=6,
            ),
            client=client,
            progress=False,
        )
    right = open_catalog(tmp_path / "right")
    order = right.compute().reset_index()
    order["rank"] = np.arange(len(order))  # the catalog's own order: partitions, then rows in each
    truth = _truth_all(a, order, 3.0).merge(order[["id", "rank", "ra", "dec"]], left_on="id_2", right_on="id")
    truth["sep_key"] = truth.sep.round(9)
    nearest = truth.sort_values(["id_1", "sep_key", "rank"]).drop_duplicates("id_1")
    two = truth.sort_values(["id_1", "sep_key", "rank"]).groupby("id_1").head(2)
    assert (truth.groupby("id_1").sep_key.apply(lambda s: s.duplicated().any())).sum() >= 300  # ties present
    left = open_catalog(tmp_path / "left")
    got = crossmatch(left, right, 3.0).compute()
    assert set(zip(got.id_1, got.id_2)) == set(zip(nearest.id_1, nearest.id_2))
    got2 = crossmatch(left, right, 3.0, how="knn", k=2).compute()
    assert set(zip(got2.id_1, got2.id_2)) == set(zip(two.id_1, two.id_2))


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["kdtree", "grid"])
@pytest.mark.parametrize("how,k", [("nearest", 1), ("knn", 3), ("all", 1)])
def test_every_kernel_gives_the_same_pairs(edge_pair, how, k, algorithm):
    """The KD-tree and the sorted-grid kernel (the one CuPy runs on a GPU) find exactly the default
    zones kernel's pairs and separations, at poles, RA 0 and every partition edge of the stress sky."""
    _, _, left, right, _ = edge_pair
    ref = crossmatch(left, right, 10.0, how=how, k=k).compute()
    assert ref is not None and crossmatch(left, right, 10.0).params.algorithm == "zones"
    got = crossmatch(left, right, 10.0, how=how, k=k, algorithm=algorithm).compute()
    assert len(ref) > 10_000 and len(got) == len(ref)
    assert set(zip(got.id_1, got.id_2)) == set(zip(ref.id_1, ref.id_2))
    merged = got.merge(ref, on=["id_1", "id_2"], suffixes=("", "_ref"))
    assert np.allclose(merged.sep_arcsec, merged.sep_arcsec_ref, rtol=0, atol=1e-9)


def _sky_patch(case: str, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    if case == "north pole across RA 0":
        return rng.uniform(-5, 5, n) % 360, rng.uniform(85, 90, n)
    if case == "south cap":
        return rng.uniform(0, 360, n), rng.uniform(-90, -89.9, n)
    if case == "RA 0/360 on the equator":
        return np.r_[rng.uniform(0, 0.02, n // 2), rng.uniform(359.98, 360, n - n // 2)], rng.uniform(
            -0.02, 0.02, n
        )
    return rng.uniform(0, 360, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n)))  # the whole sky


@pytest.mark.slow
@pytest.mark.parametrize(
    "case", ["north pole across RA 0", "south cap", "RA 0/360 on the equator", "whole sky"]
)
def test_kernels_agree_at_poles_ra0_and_tiny_and_wide_radii(case):
    """Zones (strip heights, RA windows that widen toward a pole and wrap at 0/360), grid (cells
    never narrower than 2 chords, keys that never overflow) and the KD-tree give the same pairs
    from 0.001" to 2', for all pairs and the 1 and 3 nearest."""
    from survey_engine.catalog.healpix import radec_to_xyz
    from survey_engine.crossmatch.algorithms import GridAlgorithm, KDTreeAlgorithm, ZonesAlgorithm

    rng = np.random.default_rng(3)
    ra, dec = _sky_patch(case, 20_000, rng)
    near = rng.choice(len(ra), 500, replace=False)  # 500 rows within a few mas: pairs even at 0.001"
    extra = _sky_patch(case, 4000, rng)
    rra = np.r_[
        (ra + rng.normal(0, 2e-4, len(ra))) % 360, extra[0], (ra[near] + rng.normal(0, 1e-7, 500)) % 360
    ]
    rdec = np.r_[
        np.clip(dec + rng.normal(0, 2e-4, len(ra)), -90, 90),
        extra[1],
        np.clip(dec[near] + rng.normal(0, 1e-7, 500), -90, 90),
    ]
    left, right = radec_to_xyz(ra, dec), radec_to_xyz(rra, rdec)
    radii = (0.001, 1.0, 120.0) if case in ("north pole across RA 0", "whole sky") else (0.001, 1.0, 5.0)
    for radius in radii:
        ref = KDTreeAlgorithm().all_pairs(left, right, radius)
        pairs = set(zip(*ref[:2]))
        assert len(pairs) > (100 if radius < 0.01 else 1000)
        assert set(zip(*GridAlgorithm().all_pairs(left, right, radius)[:2])) == pairs
        got = ZonesAlgorithm().all_pairs_radec(ra, dec, rra, rdec, radius)
        assert set(zip(*got[:2])) == pairs
        assert np.allclose(np.sort(got[2]), np.sort(ref[2]), rtol=0, atol=1e-9)
        for k in (1, 3):
            near = KDTreeAlgorithm().nearest(left, right, k, radius)
            assert set(zip(*ZonesAlgorithm().nearest_radec(ra, dec, rra, rdec, k, radius)[:2])) == set(
                zip(*near[:2])
            )
    # rows without a position (NaN) match nothing and leave the other rows' pairs unchanged
    nan_ra, nan_rdec = ra.copy(), rdec.copy()
    nan_ra[::7], nan_rdec[::5] = np.nan, np.nan
    got = ZonesAlgorithm().all_pairs_radec(nan_ra, dec, rra, nan_rdec, 1.0)
    ref = KDTreeAlgorithm().all_pairs(left, right, 1.0)
    keep = (ref[0] % 7 != 0) & (ref[1] % 5 != 0)
    assert set(zip(*got[:2])) == set(zip(ref[0][keep], ref[1][keep]))


@pytest.mark.slow
def test_gpu_kernel_on_a_gpu_or_a_clear_fallback(edge_pair, capsys):
    """algorithm='gpu': on a GPU machine the CuPy kernel gives the KD-tree's pairs; without one
    the same grid kernel runs on the CPU and a message says so."""
    from survey_engine.crossmatch.algorithms import gpu_available

    _, _, left, right, _ = edge_pair
    ref = crossmatch(left, right, 10.0, how="all").compute()
    res = crossmatch(left, right, 10.0, how="all", algorithm="gpu")
    usable, why = gpu_available()
    if usable:
        assert res.params.algorithm == "gpu"
    else:
        assert res.params.algorithm == "grid"
        assert "no usable GPU" in capsys.readouterr().err
    got = res.compute()
    assert set(zip(got.id_1, got.id_2)) == set(zip(ref.id_1, ref.id_2))


@pytest.mark.slow
def test_left_join_and_min_radius(edge_pair):
    a, b, left, right, _ = edge_pair
    got = crossmatch(left, right, 2.0, join="left").compute()
    assert len(got) == len(a) and set(got.id_1) == set(a.id)
    truth = _truth_all(a, b, 2.0)
    unmatched = set(a.id) - set(truth.id_1)
    missing = got[got.sep_arcsec.isna()]
    assert set(missing.id_1) == unmatched and missing.id_2.isna().all()
    ring = crossmatch(left, right, 10.0, how="all", min_radius_arcsec=3.0).compute()
    t = _truth_all(a, b, 10.0)
    t = t[t.sep >= 3.0]
    assert set(zip(ring.id_1, ring.id_2)) == set(zip(t.id_1, t.id_2))


def test_self_match_excludes_the_row_itself(edge_pair):
    a, _, left, _, root = edge_pair
    self_cat = open_catalog(root / "left")  # has a 12" margin
    got = crossmatch(left, self_cat, 5.0, exclude_self=True).compute()
    assert (got.id_1 != got.id_2).all()
    truth = _truth_all(a, a, 5.0)
    truth = truth[truth.id_1 != truth.id_2].sort_values(["id_1", "sep", "id_2"]).drop_duplicates("id_1")
    assert set(zip(got.id_1, got.id_2)) == set(zip(truth.id_1, truth.id_2))


@pytest.mark.slow
def test_self_match_all_lists_each_close_pair_once(edge_pair):
    a, _, left, _, root = edge_pair
    self_cat = open_catalog(root / "left")
    got = crossmatch(left, self_cat, 5.0, how="all", exclude_self=True).compute()
    truth = _truth_all(a, a, 5.0)
    truth = truth[truth.id_1 != truth.id_2]
    unordered = {frozenset(pair) for pair in zip(truth.id_1, truth.id_2)}
    assert len(unordered) > 100 and len(truth) == 2 * len(unordered)
    assert len(got) == len(unordered)  # once each, across partition borders too
    assert {frozenset(pair) for pair in zip(got.id_1, got.id_2)} == unordered
    # the row that sorts first by _healpix_29 is on the left
    assert (got.index.to_numpy() <= got["_healpix_29_2"].to_numpy()).all()
    # every row's own neighbours (a left join) still list a mutual pair in both orders
    both = (
        crossmatch(left, self_cat, 5.0, how="all", join="left", exclude_self=True)
        .compute()
        .dropna(subset=["sep_arcsec"])
    )
    assert len(both) == len(truth)


def test_radius_larger_than_margin_is_an_error_or_builds_one(edge_pair, client):
    a, b, left, right, _ = edge_pair
    with pytest.raises(MarginTooSmallError, match="margin is 12 arcsec, smaller than the match radius 30"):
        crossmatch(left, right, 30.0)
    wide = crossmatch(left, right, 30.0, how="all", build_margin=True, client=client)
    assert wide.right.margin_radius_arcsec == 30.0
    got = wide.compute()
    truth = _truth_all(a, b, 30.0)
    assert set(zip(got.id_1, got.id_2)) == set(zip(truth.id_1, truth.id_2))


@pytest.mark.slow
def test_write_result_as_catalog(edge_pair, tmp_path, client):
    _, _, left, right, _ = edge_pair
    res = crossmatch(left, right, 10.0, suffixes=("_a", "_b"))
    out = res.write(tmp_path / "matched", client=client)
    back = open_catalog(out)
    frame = back.compute()
    assert {"id_a", "id_b", "sep_arcsec", "ra_a", "dec_b"} <= set(frame.columns)
    assert back.row_count() == len(res.compute())
    from hats.io.validation import is_valid_catalog

    assert is_valid_catalog(out, strict=True)


def test_blanco1_dr2_against_dr3_across_ra_zero(tmp_path, client):
    """Real Gaia fields straddling RA 0: DR3 (G<17) nearest DR2 neighbour within 1" agrees with astropy."""
    dr2 = shared_path("clusters_xmatch/blanco1/blanco1_gaia_dr2_G18_field.parquet")
    dr3 = shared_path("clusters_xmatch/blanco1/blanco1_gaia_dr3_G17_field.parquet")
    run_import(
        ImportArguments(
            [str(dr3)], str(tmp_path / "dr3"), id_column="SOURCE_ID", max_rows=1500, margin_arcsec=2
        ),
        client=client,
        progress=False,
    )
    run_import(
        ImportArguments(
            [str(dr2)], str(tmp_path / "dr2"), id_column="source_id", max_rows=1500, margin_arcsec=2
        ),
        client=client,
        progress=False,
    )
    got = crossmatch(open_catalog(tmp_path / "dr3"), open_catalog(tmp_path / "dr2"), 1.0).compute()
    a, b = pd.read_parquet(dr3), pd.read_parquet(dr2)
    ca = SkyCoord(a.ra.values * u.deg, a.dec.values * u.deg)
    cb = SkyCoord((b.ra.values % 360) * u.deg, b.dec.values * u.deg)
    idx, sep, _ = ca.match_to_catalog_sky(cb)
    ok = sep.arcsec <= 1.0
    truth = set(zip(a.SOURCE_ID.values[ok], b.source_id.values[idx[ok]]))
    assert len(truth) == 9478  # as measured in SOURCES.md
    assert set(zip(got.SOURCE_ID_1, got.source_id_2)) == truth
    # most DR3 stars keep their DR2 source_id: where they do, the match agrees with the id
    same_id = got[got.SOURCE_ID_1 == got.source_id_2]
    assert len(same_id) > 0.9 * len(got)


def test_ngc2323_gaia_against_simbad(tmp_path, client):
    """Real FITS (Gaia) against a real VOTable (SIMBAD): pairs equal astropy's, and G magnitudes agree."""
    from astropy.io.votable import parse_single_table
    from astropy.table import Table

    gaia_src = shared_path("clusters_xmatch/ngc2323/ngc2323_gaia_field.fits")
    simbad_src = shared_path("clusters_xmatch/ngc2323/ngc2323_simbad_region.vot.xml")
    run_import(
        ImportArguments([str(gaia_src)], str(tmp_path / "gaia"), max_rows=4000, margin_arcsec=2),
        client=client,
        progress=False,
    )
    run_import(
        ImportArguments(
            [str(simbad_src)],
            str(tmp_path / "simbad"),
            ra_column="RA",
            dec_column="DEC",
            id_column="MAIN_ID",
            max_rows=500,
            margin_arcsec=2,
        ),
        client=client,
        progress=False,
    )
    got = crossmatch(
        open_catalog(tmp_path / "simbad"),
        open_catalog(tmp_path / "gaia"),
        1.0,
        right_columns=["phot_g_mean_mag"],
    ).compute()
    simbad = parse_single_table(str(simbad_src)).to_table().to_pandas()
    gaia = Table.read(gaia_src).to_pandas()
    idx, sep, _ = match_coordinates_sky(
        SkyCoord(simbad.RA.values * u.deg, simbad.DEC.values * u.deg),
        SkyCoord(gaia.ra.values * u.deg, gaia.dec.values * u.deg),
    )
    ok = sep.arcsec <= 1.0
    truth = set(zip(simbad.MAIN_ID.values[ok].astype(str), np.round(gaia.ra.values[idx[ok]], 9)))
    assert set(zip(got.MAIN_ID_1.astype(str), np.round(got.ra_2.to_numpy(), 9))) == truth
    assert len(got) > 1500
    with_g = got.dropna(subset=["FLUX_G_1"])
    assert np.median(np.abs(with_g.FLUX_G_1 - with_g.phot_g_mean_mag_2)) < 0.01  # SIMBAD's G is Gaia's G


def _greedy(truth: pd.DataFrame) -> set:
    """Reference one-to-one: best separations first, each id used once."""
    used_l, used_r, keep = set(), set(), set()
    for l, r in zip(*truth.sort_values(["sep", "id_1", "id_2"])[["id_1", "id_2"]].to_numpy().T):
        if l not in used_l and r not in used_r:
            used_l.add(l)
            used_r.add(r)
            keep.add((l, r))
    return keep


@pytest.mark.slow
def test_one_to_one_equals_greedy_brute_force(edge_pair, tmp_path, client):
    a, b, left, right, _ = edge_pair
    res = crossmatch(left, right, 10.0, how="one-to-one")
    got = res.compute()
    assert got.id_1.is_unique and got.id_2.is_unique
    truth = _greedy(_truth_all(a, b, 10.0))
    assert set(zip(got.id_1, got.id_2)) == truth
    # a right row claimed across a partition edge is not reused: fewer pairs than nearest
    assert len(got) < len(crossmatch(left, right, 10.0).compute())
    out = res.write(tmp_path / "o2o", client=client)
    assert open_catalog(out).row_count() == len(got)
    # left and outer joins: the rows the one-to-one choice left out, on either side
    kept_l, kept_r = {l for l, _ in truth}, {r for _, r in truth}
    outer = crossmatch(left, right, 10.0, how="one-to-one", join="outer").compute()
    paired = outer.dropna(subset=["id_1", "id_2"])
    assert set(zip(paired.id_1.astype(int), paired.id_2.astype(int))) == truth
    assert sorted(outer[outer.id_2.isna()].id_1.astype(int)) == sorted(set(a.id) - kept_l)
    assert sorted(outer[outer.id_1.isna()].id_2.astype(int)) == sorted(set(b.id) - kept_r)
    left_join = crossmatch(left, right, 10.0, how="one-to-one", join="left").compute()
    assert len(left_join) == len(a) and sorted(left_join.id_1) == sorted(a.id)


@pytest.mark.slow
def test_outer_join_equals_brute_force(edge_pair, tmp_path, client):
    a, b, left, right, _ = edge_pair
    res = crossmatch(left, right, 2.0, join="outer")
    got = res.compute()
    truth = _truth_all(a, b, 2.0).sort_values(["id_1", "sep", "id_2"]).drop_duplicates("id_1")
    paired = got.dropna(subset=["id_1", "id_2"])
    assert set(zip(paired.id_1.astype(int), paired.id_2.astype(int))) == set(zip(truth.id_1, truth.id_2))
    left_only, right_only = got[got.id_2.isna()], got[got.id_1.isna()]
    assert sorted(left_only.id_1.astype(int)) == sorted(set(a.id) - set(truth.id_1))
    assert sorted(right_only.id_2.astype(int)) == sorted(
        set(b.id) - set(truth.id_2)
    )  # each unmatched right row once
    assert len(got) == len(truth) + len(left_only) + len(right_only)
    assert (
        right_only.sep_arcsec.isna().all() and right_only.ra_1.isna().all() and right_only.ra_2.notna().all()
    )
    assert (
        right_only.index.to_numpy() == right_only["_healpix_29_2"].to_numpy()
    ).all()  # placed by its own position
    out = res.write(tmp_path / "outer", client=client)
    assert open_catalog(out).row_count() == len(got)


@pytest.mark.slow
def test_outer_join_rows_outside_every_left_partition(tmp_path, client):
    """Left: dense clumps (fine partitions with gaps between); right: sparse all-sky. Right rows
    far from every left partition get partitions of their own, never overlapping the left's."""
    from survey_engine.catalog.healpix import pixel_range29

    rng = np.random.default_rng(5)
    parts = []
    for ra0, dec0 in ((10.0, 20.0), (200.0, -45.0)):
        n = 3000
        r = np.degrees(np.sqrt(rng.uniform(0, 1, n))) * 0.02
        t = rng.uniform(0, 2 * np.pi, n)
        parts.append(
            pd.DataFrame(
                {"ra": (ra0 + r * np.cos(t) / np.cos(np.radians(dec0))) % 360, "dec": dec0 + r * np.sin(t)}
            )
        )
    a = pd.concat(parts, ignore_index=True)
    a.insert(0, "id", np.arange(len(a)))
    b = edge_stress_sky(4000, seed=6)[["ra", "dec"]].iloc[:4000].copy()
    b = pd.concat([b, a[["ra", "dec"]].iloc[::7] + 0.5 / 3600], ignore_index=True)
    b.insert(0, "id", np.arange(len(b)) + 10**7)
    left, right = _import_pair(tmp_path, client, a, b, 300, 2000, margin=10)
    res = crossmatch(left, right, 3.0, join="outer")
    got = res.compute()
    truth = _truth_all(a, b, 3.0).sort_values(["id_1", "sep", "id_2"]).drop_duplicates("id_1")
    assert len(truth) > 300
    assert sorted(got[got.id_1.isna()].id_2.astype(int)) == sorted(set(b.id) - set(truth.id_2))
    out = res.write(tmp_path / "outer", client=client)
    back = open_catalog(out)
    assert back.row_count() == len(got) and back.npartitions > left.npartitions
    starts, stops = pixel_range29(back.partitions.Norder.to_numpy(), back.partitions.Npix.to_numpy())
    order = np.argsort(starts)
    assert (starts[order][1:] >= stops[order][:-1]).all()  # no two partitions overlap
    frame = back.compute()
    assert sorted(frame.id_2.dropna().astype(int)) == sorted(got.id_2.dropna().astype(int))


def _import_pair(
    tmp_path, client, a: pd.DataFrame, b: pd.DataFrame, left_rows: int, right_rows: int, margin: float
):
    """Left and right catalogs (order up to 12) from frames with an ``id`` column."""
    for name, df, max_rows in (("left", a, left_rows), ("right", b, right_rows)):
        df.to_parquet(tmp_path / f"{name}.parquet")
        run_import(
            ImportArguments(
                [str(tmp_path / f"{name}.parquet")],
                str(tmp_path / name),
                id_column="id",
                max_rows=max_rows,
                highest_order=12,
                margin_arcsec=margin,
            ),
            client=client,
            progress=False,
        )
    return open_catalog(tmp_path / "left"), open_catalog(tmp_path / "right")


@pytest.mark.slow
def test_radius_bigger_than_the_smallest_partitions(tmp_path, client):
    """A dense clump split into partitions down to order 13 (26" across) on both sides, matched
    within 40": a pair can skip over whole partitions, and the margins (45") must reach past them."""
    rng = np.random.default_rng(31)
    n = 6_000
    r = np.sqrt(rng.uniform(0, 1, n)) * (150 / 3600)  # a disc 2.5' in radius, in degrees
    t = rng.uniform(0, 2 * np.pi, n)
    dec = 41.27 + r * np.sin(t)
    ra = 10.68 + r * np.cos(t) / np.cos(np.radians(dec))
    a = pd.DataFrame({"id": np.arange(n // 2), "ra": ra[: n // 2], "dec": dec[: n // 2]})
    b = pd.DataFrame({"id": np.arange(n - n // 2) + 10**7, "ra": ra[n // 2 :], "dec": dec[n // 2 :]})
    for name, df, max_rows in (("left", a, 30), ("right", b, 40)):
        df.to_parquet(tmp_path / f"{name}.parquet")
        run_import(
            ImportArguments(
                [str(tmp_path / f"{name}.parquet")],
                str(tmp_path / name),
                id_column="id",
                max_rows=max_rows,
                highest_order=13,
                margin_arcsec=45,
            ),
            client=client,
            progress=False,
        )
    left, right = open_catalog(tmp_path / "left"), open_catalog(tmp_path / "right")
    size = {o: np.degrees(np.sqrt(4 * np.pi / (12 * 4.0**o))) * 3600 for o in range(14)}
    assert size[left.partitions.Norder.max()] < 40 and size[right.partitions.Norder.max()] < 40
    assert len(left.partitions) > 10 and len(right.partitions) > 10
    truth = _truth_all(a, b, 40.0)
    got = crossmatch(left, right, 40.0, how="all").compute()
    assert len(truth) > 100_000
    assert set(zip(got.id_1, got.id_2)) == set(zip(truth.id_1, truth.id_2))
    nearest = crossmatch(left, right, 40.0).compute()
    best = truth.sort_values(["id_1", "sep", "id_2"]).drop_duplicates("id_1")
    assert set(zip(nearest.id_1, nearest.id_2)) == set(zip(best.id_1, best.id_2))


@pytest.mark.slow
def test_left_coarser_than_right_and_rows_outside_right_coverage(tmp_path, client):
    """Right: dense clumps only (fine partitions, gaps between); left: sparse all-sky (coarse
    partitions) plus points just outside the clumps, where no right partition covers them."""
    rng = np.random.default_rng(21)
    clumps = [(10.0, 20.0), (200.0, -45.0), (0.01, 0.0), (123.0, 89.5)]
    right_parts, left_parts = [], []
    for ra0, dec0 in clumps:
        n = 6000
        r = np.degrees(np.sqrt(rng.uniform(0, 1, n))) * 0.02  # 1.2 arcmin discs
        t = rng.uniform(0, 2 * np.pi, n)
        dec = np.clip(dec0 + r * np.sin(t), -90, 90)
        ra = (ra0 + r * np.cos(t) / np.maximum(np.cos(np.radians(dec)), 1e-3)) % 360
        right_parts.append(pd.DataFrame({"ra": ra, "dec": dec}))
        # left: points near the clump (some inside, some just outside its rim)
        k = 800
        r2 = rng.uniform(0, 0.03, k)
        t2 = rng.uniform(0, 2 * np.pi, k)
        dec2 = np.clip(dec0 + r2 * np.sin(t2), -90, 90)
        ra2 = (ra0 + r2 * np.cos(t2) / np.maximum(np.cos(np.radians(dec2)), 1e-3)) % 360
        left_parts.append(pd.DataFrame({"ra": ra2, "dec": dec2}))
    sky = edge_stress_sky(5000, seed=22)[["ra", "dec"]].iloc[:5000]
    a = pd.concat([*left_parts, sky], ignore_index=True)
    b = pd.concat(right_parts, ignore_index=True)
    a.insert(0, "id", np.arange(len(a)))
    b.insert(0, "id", np.arange(len(b)) + 10**7)
    left, right = _import_pair(tmp_path, client, a, b, 20_000, 300, margin=30)
    assert left.partitions.Norder.max() < right.partitions.Norder.min()
    from survey_engine.crossmatch.plan import plan_crossmatch

    assert any(t.orphan_files for t in plan_crossmatch(left, right, 20.0))
    got = crossmatch(left, right, 20.0, how="all").compute()
    truth = _truth_all(a, b, 20.0)
    assert len(truth) > 300
    assert set(zip(got.id_1, got.id_2)) == set(zip(truth.id_1, truth.id_2))


def test_pixels_outside_are_disjoint_coarsest_and_cover_every_row():
    """The partitions an outer join gives right rows outside every left partition: each such row
    in exactly one, none overlapping a left pixel, each as coarse as it can be."""
    from survey_engine.catalog.healpix import pixel_range29
    from survey_engine.crossmatch.joins import pixels_outside

    rng = np.random.default_rng(8)
    given = [(3, int(p)) for p in rng.choice(768, 40, replace=False)]  # some order-3 pixels ...
    for o, p in given[:10]:  # ... ten of them replaced by a few of their order-6 descendants
        given.remove((o, p))
        given += [(6, (p << 6) + int(c)) for c in rng.choice(64, 5, replace=False)]
    orders, pixels = np.array([g[0] for g in given]), np.array([g[1] for g in given])
    index = rng.integers(0, 12 * 4**29, 200_000)
    o_out, p_out = pixels_outside(index, orders, pixels)
    gs, ge = pixel_range29(orders, pixels)
    os_, oe = pixel_range29(o_out, p_out)
    inside_given = ((index[:, None] >= gs) & (index[:, None] < ge)).any(axis=1)
    hits = ((index[~inside_given][:, None] >= os_) & (index[~inside_given][:, None] < oe)).sum(axis=1)
    assert len(o_out) > 100 and (hits == 1).all()  # every outside row in exactly one new pixel
    assert not ((os_[:, None] < ge) & (oe[:, None] > gs)).any()  # no new pixel overlaps a given one
    ps, pe = pixel_range29(np.maximum(o_out - 1, 0), p_out >> 2)  # each parent does (or it is order 0)
    assert ((o_out == 0) | ((ps[:, None] < ge) & (pe[:, None] > gs)).any(axis=1)).all()
    assert o_out.max() == 6 and o_out.min() <= 2  # fine next to the order-6 pixels, coarse far from all
    assert not inside_given.all() and pixels_outside(index[inside_given], orders, pixels)[0].size == 0


def test_knn_k_is_capped_by_the_right_rows_with_a_warning(tmp_path, client):
    """--k 1000000 against 40 rows asks for 40 neighbours (it took 11.7 GB before), and says so."""
    rng = np.random.default_rng(12)
    right = pd.DataFrame(
        {"id": np.arange(40), "ra": 10 + rng.uniform(0, 0.01, 40), "dec": rng.uniform(0, 0.01, 40)}
    )
    left = right.iloc[:5].copy()
    for name, frame in (("l", left), ("r", right)):
        frame.to_parquet(tmp_path / f"{name}.parquet")
        run_import(
            ImportArguments(
                [str(tmp_path / f"{name}.parquet")], str(tmp_path / name), id_column="id", margin_arcsec=60
            ),
            client=client,
            progress=False,
        )
    with pytest.warns(UserWarning, match=r"--k 1000000 is more than the 40 rows of .*r; matching with k=40"):
        result = crossmatch(
            open_catalog(tmp_path / "l"), open_catalog(tmp_path / "r"), 60.0, how="knn", k=1_000_000
        )
    assert result.params.k == 40
    pairs = result.compute()
    assert len(pairs) == 5 * 40  # every right row is within 60" of every left row
