import healpy as hp
import numpy as np

from survey_engine.catalog import healpix


def test_radec_to_healpix_matches_healpy_nested():
    rng = np.random.default_rng(1)
    ra = np.concatenate([rng.uniform(0, 360, 200_000), [0.0, 359.9999999, 180.000001, 45.0]])
    dec = np.concatenate([np.degrees(np.arcsin(rng.uniform(-1, 1, 200_000))), [90.0, -90.0, 0.0, 41.8103149]])
    for order in (0, 3, 10, 20, 26):
        ours = healpix.radec_to_healpix(ra, dec, order)
        ref = hp.ang2pix(2**order, ra, dec, nest=True, lonlat=True)
        assert np.array_equal(ours, ref), order


def test_degrade_and_pixel_range_consistent():
    rng = np.random.default_rng(2)
    ra, dec = rng.uniform(0, 360, 10_000), rng.uniform(-90, 90, 10_000)
    hp29 = healpix.radec_to_healpix(ra, dec)
    for order in (0, 5, 12):
        parent = healpix.degrade(hp29, 29, order)
        assert np.array_equal(parent, healpix.radec_to_healpix(ra, dec, order))
        start, stop = healpix.pixel_range29(order, parent)
        assert np.all((start <= hp29) & (hp29 < stop))


def test_border_descendants_are_exactly_the_children_touching_the_border():
    for order, pix, depth in ((0, 4, 3), (1, 17, 4), (2, 100, 2), (3, 5, 6)):
        ours = set(healpix.border_descendants(order, pix, depth).tolist())
        children = np.arange(pix << (2 * (depth - order)), (pix + 1) << (2 * (depth - order)))
        nb = hp.get_all_neighbours(2**depth, children, nest=True).T  # (N, 8)
        outside = (nb >= 0) & ((nb >> (2 * (depth - order))) != pix)
        ref = set(children[outside.any(axis=1)].tolist())
        assert ours == ref, (order, pix, depth)


def test_margin_order_pixels_wider_than_radius():
    for radius in (0.5, 5, 60, 600, 3600):
        order = healpix.margin_order_for_radius(radius)
        min_width = np.degrees(hp.nside2resol(2**order)) * 3600 * 0.3
        assert min_width >= radius
        assert order == 29 or 0.3 * np.degrees(hp.nside2resol(2 ** (order + 1))) * 3600 < radius


def test_distance_to_polyline_matches_sampled_distance():
    from tests.catalog.brute import boundary_samples, healpy_xyz, nearest_sample_chord

    rng = np.random.default_rng(5)
    order, pix = 4, 1234
    centre_ra, centre_dec = hp.pix2ang(16, pix, nest=True, lonlat=True)
    ra = centre_ra + rng.normal(0, 3, 5000)
    dec = np.clip(centre_dec + rng.normal(0, 3, 5000), -90, 90)
    pts = healpy_xyz(ra % 360, dec)
    ring = healpix.pixel_boundary_xyz(order, pix)
    ours = np.degrees(healpix.distance_to_polyline_rad(pts, ring)) * 3600
    chord = nearest_sample_chord(boundary_samples(order, pix, 0.05), pts)
    ref = np.degrees(2 * np.arcsin(chord / 2)) * 3600
    assert np.all(ours <= ref + 1e-4)  # 0.1 mas: float rounding only
    assert np.all(ref - ours <= 0.05)
