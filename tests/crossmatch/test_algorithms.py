"""The cross-match algorithm objects: they carry and check their parameters, validate the catalogs,
pickle, and give through ``crossmatch(..., algorithm=<object>)`` exactly the keyword form's pairs
and a brute-force search's."""

import pickle
from dataclasses import replace

import astropy.units as u
import numpy as np
import pandas as pd
import pytest
from astropy.coordinates import SkyCoord, search_around_sky

from survey_engine import open_catalog
from survey_engine.crossmatch import (
    CrossmatchMethod,
    GPUCrossmatch,
    GridCrossmatch,
    KDTreeCrossmatch,
    MarginTooSmallError,
    ZonesCrossmatch,
    crossmatch,
)
from survey_engine.crossmatch.algorithms import method_for
from survey_engine.crossmatch.arguments import CrossmatchArguments
from survey_engine.errors import MissingColumnError, UsageError
from survey_engine.ingest.file_import.arguments import ImportArguments
from survey_engine.ingest.file_import.run import run_import

MARGIN_ARCSEC = 5.0


def _sky(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """3,000 left rows over 4 x 4 degrees around RA 0 (partition edges and the 0/360 wrap), and
    1 to 4 right rows within about 2.5" of each plus 1,000 unrelated ones: knn has work to do."""
    rng = np.random.default_rng(seed)
    n = 3000
    ra = rng.uniform(-2, 2, n) % 360
    dec = rng.uniform(-2, 2, n)
    left = pd.DataFrame({"id": np.arange(n), "ra": ra, "dec": dec})
    copies = rng.integers(1, 5, n)
    src = np.repeat(np.arange(n), copies)
    off = rng.normal(0, 1.2 / 3600, (len(src), 2))
    rra = (ra[src] + off[:, 0] / np.cos(np.radians(dec[src]))) % 360
    rdec = dec[src] + off[:, 1]
    extra_ra, extra_dec = rng.uniform(-2, 2, 1000) % 360, rng.uniform(-2, 2, 1000)
    right = pd.DataFrame({"ra": np.r_[rra, extra_ra], "dec": np.r_[rdec, extra_dec]})
    right["id"] = np.arange(len(right)) + 1_000_000
    return left, right


@pytest.fixture(scope="module")
def small_pair(tmp_path_factory, client):
    """The two tables imported as catalogs of several partitions each, the right with a 5" margin."""
    root = tmp_path_factory.mktemp("xmobject")
    a, b = _sky(7)
    for name, frame, max_rows in (("left", a, 400), ("right", b, 1200)):
        frame.to_parquet(root / f"{name}.parquet")
        run_import(
            ImportArguments(
                [str(root / f"{name}.parquet")],
                str(root / name),
                id_column="id",
                max_rows=max_rows,
                margin_arcsec=MARGIN_ARCSEC,
            ),
            client=client,
            progress=False,
        )
    left, right = open_catalog(root / "left"), open_catalog(root / "right")
    assert left.npartitions > 1 and right.npartitions > 1
    return a, b, left, right


def _brute_knn(a: pd.DataFrame, b: pd.DataFrame, radius: float, k: int) -> pd.DataFrame:
    ca = SkyCoord(a.ra.values * u.deg, a.dec.values * u.deg)
    cb = SkyCoord(b.ra.values * u.deg, b.dec.values * u.deg)
    ia, ib, sep, _ = search_around_sky(ca, cb, radius * u.arcsec)
    pairs = pd.DataFrame({"id_1": a.id.values[ia], "id_2": b.id.values[ib], "sep": sep.arcsec})
    return pairs.sort_values(["id_1", "sep", "id_2"]).groupby("id_1").head(k)


@pytest.mark.parametrize(
    "parameters,flag",
    [
        ({"radius_arcsec": -1.0}, "--radius (radius_arcsec in Python) must be positive"),
        ({"radius_arcsec": 0}, "--radius (radius_arcsec in Python) must be positive"),
        ({"radius_arcsec": float("nan")}, "--radius (radius_arcsec in Python) must be positive"),
        ({"radius_arcsec": "2"}, "--radius (radius_arcsec in Python) must be a number"),
        ({"radius_arcsec": 1.0, "how": "closest"}, "--how (how in Python) must be one of"),
        ({"radius_arcsec": 1.0, "how": "knn", "k": 0}, "--k (k in Python) must be at least 1"),
        ({"radius_arcsec": 1.0, "how": "knn", "k": 2.5}, "--k (k in Python) must be a whole number"),
        ({"radius_arcsec": 1.0, "min_radius_arcsec": -0.1}, "--min-radius (min_radius_arcsec in Python)"),
        ({"radius_arcsec": 1.0, "min_radius_arcsec": 1.0}, "--min-radius (min_radius_arcsec in Python)"),
        ({"radius_arcsec": 1.0, "exclude_self": "yes"}, "--self (exclude_self in Python) must be True or"),
    ],
)
@pytest.mark.parametrize("kind", [ZonesCrossmatch, KDTreeCrossmatch, GridCrossmatch, GPUCrossmatch])
def test_each_bad_parameter_is_refused_naming_the_flag(kind, parameters, flag):
    with pytest.raises(UsageError) as info:
        kind(**parameters)
    assert str(info.value).startswith(flag)


def test_good_parameters_are_kept_as_plain_values_and_the_base_is_abstract():
    method = KDTreeCrossmatch(radius_arcsec=np.float32(2), how="knn", k=np.int64(3), min_radius_arcsec=0)
    assert (method.radius_arcsec, method.how, method.k, method.min_radius_arcsec) == (2.0, "knn", 3, 0.0)
    assert type(method.k) is int and type(method.radius_arcsec) is float and method.name == "kdtree"
    assert method == KDTreeCrossmatch(2.0, "knn", 3) and method != ZonesCrossmatch(2.0, "knn", 3)
    assert method.on_kernel("grid") == GridCrossmatch(2.0, "knn", 3)
    assert method_for("zones", radius_arcsec=1.0) == ZonesCrossmatch(1.0)
    with pytest.raises(UsageError, match="unknown cross-match algorithm 'fastest'"):
        method_for("fastest", radius_arcsec=1.0)
    with pytest.raises(TypeError, match="CrossmatchMethod is abstract; use one of ZonesCrossmatch"):
        CrossmatchMethod(1.0)
    with pytest.raises(Exception, match="cannot assign"):  # frozen: parameters are checked once, at birth
        method.radius_arcsec = -1.0


@pytest.mark.parametrize("kind", [ZonesCrossmatch, KDTreeCrossmatch, GridCrossmatch, GPUCrossmatch])
def test_the_object_pickles_to_an_equal_object(kind):
    method = kind(radius_arcsec=2.5, how="all", min_radius_arcsec=0.5, exclude_self=True)
    back = pickle.loads(pickle.dumps(method))
    assert back == method and type(back) is kind and hash(back) == hash(method)
    assert back.parameters() == {
        "radius_arcsec": 2.5,
        "how": "all",
        "k": 1,
        "min_radius_arcsec": 0.5,
        "exclude_self": True,
    }
    assert len(pickle.dumps(method)) < 400  # small: it travels with every match task


def test_object_gives_the_keyword_forms_pairs_and_brute_forces(small_pair):
    a, b, left, right = small_pair
    method = KDTreeCrossmatch(radius_arcsec=2, how="knn", k=3)
    planned = crossmatch(left, right, algorithm=method)
    assert planned.params.method == method and planned.params.algorithm == "kdtree"
    assert (planned.params.radius_arcsec, planned.params.how, planned.params.k) == (2.0, "knn", 3)
    got = planned.compute()
    keywords = crossmatch(left, right, 2, how="knn", k=3, algorithm="kdtree").compute()
    truth = _brute_knn(a, b, 2.0, 3)
    assert len(truth) > 5000 and truth.groupby("id_1").size().max() == 3
    assert len(got) == len(keywords) == len(truth)
    assert set(zip(got.id_1, got.id_2)) == set(zip(keywords.id_1, keywords.id_2))
    assert set(zip(got.id_1, got.id_2)) == set(zip(truth.id_1, truth.id_2))
    merged = got.merge(truth, on=["id_1", "id_2"])
    assert np.allclose(merged.sep_arcsec, merged.sep, rtol=0, atol=1e-6)
    # the same object through Catalog.crossmatch, and on another kernel, gives the same pairs
    via_catalog = left.crossmatch(right, algorithm=method).compute()
    assert set(zip(via_catalog.id_1, via_catalog.id_2)) == set(zip(got.id_1, got.id_2))
    zones = crossmatch(left, right, algorithm=method.on_kernel("zones")).compute()
    assert set(zip(zones.id_1, zones.id_2)) == set(zip(got.id_1, got.id_2))


def test_self_match_and_min_radius_ride_on_the_object(small_pair):
    """exclude_self with how=all (inner join lists each close pair once) and a minimum radius:
    the object's answer is the keyword form's."""
    _, _, left, _ = small_pair
    method = ZonesCrossmatch(radius_arcsec=MARGIN_ARCSEC, how="all", exclude_self=True, min_radius_arcsec=1.0)
    got = crossmatch(left, left, algorithm=method).compute()
    keywords = crossmatch(
        left, left, MARGIN_ARCSEC, how="all", exclude_self=True, min_radius_arcsec=1.0
    ).compute()
    assert len(got) > 0 and len(got) == len(keywords)
    assert set(zip(got.id_1, got.id_2)) == set(zip(keywords.id_1, keywords.id_2))
    assert (got.id_1 != got.id_2).all() and (got.sep_arcsec >= 1.0).all()
    assert not set(zip(got.id_1, got.id_2)) & set(zip(got.id_2, got.id_1))  # each pair once


def test_conflicting_keywords_are_refused(small_pair):
    _, _, left, right = small_pair
    method = KDTreeCrossmatch(radius_arcsec=2, how="knn", k=3)
    for keywords, named in (
        ({"radius_arcsec": 3.0}, "radius_arcsec=3.0"),
        ({"how": "all"}, "how='all'"),
        ({"k": 5}, "k=5"),
        ({"min_radius_arcsec": 0.5}, "min_radius_arcsec=0.5"),
        ({"exclude_self": True}, "exclude_self=True"),
    ):
        with pytest.raises(UsageError) as info:
            crossmatch(left, right, algorithm=method, **keywords)
        assert f"the keyword(s) {named} conflict with algorithm=KDTreeCrossmatch(radius_arcsec=2.0" in str(
            info.value
        )
    with pytest.raises(UsageError, match=r"radius_arcsec=3\.0 conflict"):
        left.crossmatch(right, 3.0, algorithm=method)
    # a keyword that says what the object says is no conflict
    assert crossmatch(left, right, 2.0, how="knn", k=3, algorithm=method).params.method == method
    # without an object the radius is required, and the algorithm must be a name or an object
    with pytest.raises(UsageError, match=r"--radius \(radius_arcsec in Python\) is required"):
        crossmatch(left, right, how="knn")
    with pytest.raises(UsageError, match=r"--algorithm \(algorithm in Python\) must be a kernel name"):
        crossmatch(left, right, 2.0, algorithm=3)


def test_validate_checks_the_margin_with_the_motion_and_the_coordinates(small_pair):
    _, _, left, right = small_pair
    ZonesCrossmatch(radius_arcsec=MARGIN_ARCSEC).validate(left, right)
    with pytest.raises(
        MarginTooSmallError, match=r"its margin is 5 arcsec, smaller than the match radius 6 "
    ):
        ZonesCrossmatch(radius_arcsec=4.0).validate(left, right, motion_arcsec=2.0)
    with pytest.raises(MarginTooSmallError, match="--build-margin"):
        crossmatch(left, right, algorithm=ZonesCrossmatch(radius_arcsec=6.0))
    moved = replace(right, properties={**right.properties, "hats_col_ra": "ra_icrs"})
    with pytest.raises(
        MissingColumnError, match=r"right catalog has no coordinate column\(s\) \['ra_icrs'\]"
    ):
        ZonesCrossmatch(radius_arcsec=1.0).validate(left, moved)


def test_gpu_object_runs_on_the_grid_kernel_where_no_gpu_is_usable(small_pair, capsys):
    from survey_engine.crossmatch.algorithms import gpu_available

    _, _, left, right = small_pair
    planned = crossmatch(left, right, algorithm=GPUCrossmatch(radius_arcsec=2, how="all"))
    usable, _ = gpu_available()
    if usable:
        assert planned.params.method == GPUCrossmatch(radius_arcsec=2, how="all")
    else:
        assert planned.params.method == GridCrossmatch(radius_arcsec=2, how="all")
        assert "no usable GPU" in capsys.readouterr().err
    got = planned.compute()
    ref = crossmatch(left, right, 2.0, how="all").compute()
    assert len(got) == len(ref) and set(zip(got.id_1, got.id_2)) == set(zip(ref.id_1, ref.id_2))


def test_knn_k_on_the_object_is_capped_by_the_right_rows(small_pair):
    _, b, left, right = small_pair
    with pytest.warns(UserWarning, match=rf"--k 10000000 is more than the {len(b)} rows"):
        planned = crossmatch(left, right, algorithm=KDTreeCrossmatch(radius_arcsec=1.0, how="knn", k=10**7))
    assert planned.params.method == KDTreeCrossmatch(radius_arcsec=1.0, how="knn", k=len(b))


def test_the_cli_arguments_build_the_object_once(small_pair):
    """``run_crossmatch`` hands ``crossmatch`` one object built from the declared options."""
    _, _, left, right = small_pair
    args = CrossmatchArguments(
        left, right, radius=2.0, out="unused", how="knn", k=3, min_radius=0.5, algorithm="kdtree"
    )
    assert args.algorithm_object() == KDTreeCrossmatch(2.0, "knn", 3, 0.5, False)
    args = CrossmatchArguments(left, right, radius=1.0, out="unused", exclude_self=True, gpu=True)
    assert args.algorithm_object() == GPUCrossmatch(1.0, exclude_self=True)
    with pytest.raises(UsageError, match=r"--min-radius \(min_radius_arcsec in Python\)"):
        CrossmatchArguments(left, right, radius=1.0, out="unused", min_radius=2.0).algorithm_object()
