"""Selections at their edges, against brute force and LSDB: whole-RA boxes, zero-height boxes,
concave / degenerate / repeated-vertex polygons, empty pixel lists."""

from __future__ import annotations

import numpy as np
import pytest

from survey_engine import open_catalog
from survey_engine.catalog import selection as sel
from survey_engine.catalog.healpix import radec_to_healpix
from survey_engine.catalog.selection import SelectionError
from tests.conftest import random_sky

ROWS = 5000


@pytest.fixture(scope="module")
def sky(tmp_path_factory, client):
    """(collection path, all rows) of a 5,000-row all-sky catalog, at most 500 rows a partition."""
    from survey_engine.ingest.file_import.arguments import ImportArguments
    from survey_engine.ingest.file_import.run import run_import

    work = tmp_path_factory.mktemp("selection")
    src = work / "sky.parquet"
    random_sky(ROWS, seed=11).to_parquet(src)
    out = work / "sky"
    run_import(
        ImportArguments([str(src)], str(out), id_column="id", max_rows=500, margin_arcsec=None),
        client=client,
        progress=False,
    )
    return out, open_catalog(out).compute()


def _ids(frame):
    return sorted(frame["id"].tolist())


@pytest.mark.parametrize("ra_limits", [(0, 0), (360, 0), (0, 360), (10, 370)])
def test_box_with_equal_ra_limits_is_the_whole_ra_range(sky, ra_limits):
    import lsdb

    path, rows = sky
    got = open_catalog(path).box_search(ra_limits[0], ra_limits[1], -10.0, 10.0).compute()
    want = rows[(rows.dec >= -10) & (rows.dec <= 10)]
    assert len(want) > 500 and _ids(got) == _ids(want)
    if ra_limits != (
        10,
        370,
    ):  # LSDB filters rows by the whole RA range but prunes to a zero-width zone there
        peer = lsdb.open_catalog(path).box_search(ra=ra_limits, dec=(-10.0, 10.0)).compute()
        assert _ids(peer) == _ids(want)


def test_box_through_ra_zero_and_to_360(sky):
    path, rows = sky
    cat = open_catalog(path)
    got = cat.box_search(350, 360, -30, 30).compute()
    assert _ids(got) == _ids(rows[(rows.ra >= 350) & (rows.dec.abs() <= 30)])
    got = cat.box_search(350, 10, -30, 30).compute()
    assert _ids(got) == _ids(rows[((rows.ra >= 350) | (rows.ra <= 10)) & (rows.dec.abs() <= 30)])


def test_box_with_equal_dec_limits_is_refused_not_a_panic(sky):
    path, _ = sky
    with pytest.raises(SelectionError, match="dec_min < dec_max.*zero height"):
        open_catalog(path).box_search(0, 10, 10, 10)
    with pytest.raises(SelectionError, match="dec_min < dec_max"):
        open_catalog(path).box_search(0, 10, 20, 10)
    with pytest.raises(SelectionError, match="RA limits must be finite"):
        open_catalog(path).box_search(float("nan"), 10, 0, 10)


def test_cdshealpix_panics_become_selection_errors():
    import astropy.units as u
    import cdshealpix.nested as cdsn
    from astropy.coordinates import Latitude, Longitude

    args = (Longitude(0, u.deg), Latitude(10, u.deg), Longitude(10, u.deg), Latitude(10, u.deg), 3)
    with pytest.raises(BaseException) as raw:  # what cdshealpix does by itself: a Rust panic
        cdsn.zone_search(*args)
    assert not isinstance(raw.value, Exception)
    with pytest.raises(SelectionError, match="box: cdshealpix cannot compute this region"):
        sel._cdshealpix(cdsn.zone_search, *args, what="box")


@pytest.mark.parametrize(
    "vertices,message",
    [
        ([(10, 0), (30, 0), (30, 20), (20, 5), (10, 20)], "must be convex"),
        ([(10, 0), (20, 0), (30, 0), (20, 10)], r"vertices \[0, 1, 2\] lie on one great circle"),
        (
            [(10, 0), (20, 0), (20, 10), (10, 0)],
            "vertex 3 .* same point as vertex 0.*do not repeat the first vertex",
        ),
        (
            [(10, 0), (20, 0), (20, 0), (15, 10)],
            r"vertex 2 \(20, 0\) is the same point as vertex 1 \(20, 0\); give each vertex once",
        ),
        ([(0, 90), (120, 90), (240, 80)], "same point as vertex 0"),
    ],
)
def test_polygons_lsdb_refuses_are_refused(sky, vertices, message):
    from hats.pixel_math.validators import validate_polygon  # what LSDB's polygon_search validates with

    path, _ = sky
    with pytest.raises(SelectionError, match=message):
        open_catalog(path).polygon_search(vertices)
    if vertices[0] != (0, 90):  # hats compares vertices exactly; (0, 90) and (120, 90) differ to it
        with pytest.raises(ValueError):
            validate_polygon(vertices)


@pytest.mark.parametrize(
    "vertices", [[(40, 10), (60, 12), (58, 30), (45, 25)], [(45, 25), (58, 30), (60, 12), (40, 10)]]
)
def test_convex_polygon_either_orientation_equals_brute_force(sky, vertices):
    from survey_engine.catalog.healpix import radec_to_xyz

    path, rows = sky
    got = open_catalog(path).polygon_search(vertices).compute()
    corners = radec_to_xyz(*np.array(vertices, dtype=float).T)
    points = radec_to_xyz(rows.ra.to_numpy(), rows.dec.to_numpy())
    sides = np.stack(
        [points @ np.cross(corners[i], corners[(i + 1) % len(corners)]) for i in range(len(corners))]
    )
    near = points @ corners.sum(axis=0) > 0  # not the antipodal twin, whose sides have the other signs
    inside = (np.all(sides > 0, axis=0) | np.all(sides < 0, axis=0)) & near
    assert len(got) > 10 and _ids(got) == _ids(rows[inside])


def test_pixel_search_returns_the_rows_in_the_pixels_and_refuses_an_empty_list(sky):
    path, rows = sky
    cat = open_catalog(path)
    got = cat.pixel_search([(3, 100), (2, 7)]).compute()
    hp3 = radec_to_healpix(rows.ra.to_numpy(), rows.dec.to_numpy(), 3)
    want = rows[(hp3 == 100) | ((hp3 >> 2) == 7)]
    assert _ids(got) == _ids(want)
    whole = cat.pixel_search([(3, 100)])
    assert len(whole.compute()) < sum(whole.partition_rows())  # filtered rows, not whole partitions
    with pytest.raises(SelectionError, match="an empty list selects nothing"):
        cat.pixel_search([])
    with pytest.raises(SelectionError, match=r"\(3, 768\) is not a HEALPix pixel"):
        cat.pixel_search([(3, 768)])
    assert np.all(np.isin(got["id"], rows["id"]))
