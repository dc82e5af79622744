"""Catalogs in a notebook: repr / _repr_html_, head() from one partition, Mollweide sky plots,
to_astropy() with the units and descriptions of the files. On the real rho Oph Gaia DR2 VOTable
(2,300 rows with units, UCDs and descriptions)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from survey_engine.catalog import catalog as catalog_module
from survey_engine.catalog import layout, plots
from survey_engine.catalog.catalog import open_catalog
from tests.conftest import shared_path

VOTABLE = "clusters_xmatch/rho_oph/gaia_sample_cleaned.vot"


@pytest.fixture(scope="module")
def oph(tmp_path_factory, client):
    from survey_engine.ingest.file_import.arguments import ImportArguments
    from survey_engine.ingest.file_import.run import run_import

    out = tmp_path_factory.mktemp("oph") / "oph"
    run_import(
        ImportArguments(
            [str(shared_path(VOTABLE))], str(out), id_column="source_id", max_rows=250, margin_arcsec=60.0
        ),
        client=client,
        progress=False,
    )
    return open_catalog(out)


@pytest.fixture(scope="module")
def source():
    from astropy.io.votable import parse_single_table

    return parse_single_table(str(shared_path(VOTABLE))).to_table(use_names_over_ids=True)


def test_repr_names_rows_partitions_by_order_margin_and_columns(oph, source):
    text = repr(oph)
    orders = layout.read_partition_info(oph.path).Norder.value_counts().sort_index()
    assert len(orders) > 1  # several orders: the table below is not trivial
    assert text.startswith(f"Catalog 'oph': 2,300 rows in {oph.npartitions} partitions")
    assert ", ".join(f"order {o}: {n}" for o, n in orders.items()) in text
    assert f"margin 60 arcsec (oph_60arcsec, {oph.margin.row_count():,} rows)" in text
    assert f"columns ({len(source.colnames)}):" in text
    assert re.search(r"\n    ra +double +\[deg\]  Right ascension\n", text)
    assert re.search(
        r"\n    pmra +double +\[mas.yr\*\*-1\]  Proper motion in right ascension direction\n", text
    )
    assert "source_id" in text and "_healpix_29" not in text
    # a description wrapped over lines in the file is shown on one line
    assert "Unique source identifier (unique within a particular Data Release)" in text


def test_repr_of_a_selection_and_a_filter(oph):
    some = oph.pixel_search([(int(oph.partitions.Norder[0]), int(oph.partitions.Npix[0]))])
    assert "1 partitions" in repr(some)
    cone = oph.cone_search(246.8, -24.5, 1800)
    assert "at most" in repr(cone) and "len(catalog.compute())" in repr(cone)
    narrowed = oph[["source_id", "ra", "dec"]]
    assert "columns (3):" in repr(narrowed) and "pmra" not in repr(narrowed).split("columns")[1]


def test_repr_html_is_a_table_of_columns_with_units_and_ucds(oph):
    html = oph._repr_html_()
    assert "<b>Catalog oph</b>: 2,300 rows" in html
    assert (
        "<tr><td><code>ra</code></td><td>double</td><td>deg</td><td>Right ascension</td><td>pos.eq.ra;meta.main</td></tr>"
        in html
    )
    assert "(BP-RP)**2" in html
    orders = layout.read_partition_info(oph.path).Norder.value_counts().sort_index()
    for order, n in orders.items():
        assert f"<tr><td>{order}</td><td>{n}</td></tr>" in html
    assert "<script" not in html and html.count("<table>") == 2


def test_head_reads_one_partition(oph, monkeypatch):
    calls = []
    original = catalog_module.read_partition

    def counting(path, *args, **kwargs):
        calls.append(path)
        return original(path, *args, **kwargs)

    monkeypatch.setattr(catalog_module, "read_partition", counting)
    rows = oph.partition_rows()
    big = next(i for i, n in enumerate(rows) if n >= 5)
    one = oph.pixel_search([(int(oph.partitions.Norder[big]), int(oph.partitions.Npix[big]))])
    head = one.head(5)
    assert calls == [one.partition_files()[0]] and len(head) == 5
    stored = pd.read_parquet(one.partition_files()[0]).set_index("_healpix_29")
    pd.testing.assert_frame_equal(head, stored.iloc[:5][head.columns])
    assert list(head.columns) == oph.column_names()

    # the whole catalog: the first partitions, only as many as hold n rows
    calls.clear()
    n = rows[0] + 1
    head = oph.head(n)
    assert calls == oph.partition_files()[:2] and len(head) == n
    calls.clear()
    few = oph[["source_id", "pmra"]].head(rows[0])
    assert len(calls) == 1 and list(few.columns) == ["source_id", "pmra"] and len(few) == rows[0]


def test_head_after_a_row_filter_reads_on_only_until_it_has_n_rows(oph, monkeypatch):
    calls = []
    original = catalog_module.read_partition
    monkeypatch.setattr(
        catalog_module, "read_partition", lambda p, *a, **k: calls.append(p) or original(p, *a, **k)
    )
    cone = oph.cone_search(246.8, -24.5, 1800)
    everything = cone.compute()
    calls.clear()
    head = cone.head(10)
    assert len(head) == min(10, len(everything))
    assert set(head.source_id) <= set(everything.source_id)
    assert len(calls) < cone.npartitions  # not the whole selection
    none = oph.cone_search(0, 0, 10).head()
    assert len(none) == 0 and list(none.columns) == oph.column_names()


def test_plot_pixels_draws_each_partition_coloured_by_order(oph):
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure

    fig = oph.plot_pixels()
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.name == "mollweide"
    [coll] = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(coll.get_paths()) >= oph.npartitions
    assert sorted(set(coll.get_array().tolist())) == sorted(set(oph.partitions.Norder.astype(float)))

    fig = oph.plot_pixels(color_by="density")
    [coll] = [c for c in fig.axes[0].collections if isinstance(c, PolyCollection)]
    expected = np.asarray(oph.partition_rows()) / plots.pixel_area_deg2(oph.partitions.Norder.to_numpy())
    assert sorted(np.asarray(coll.get_array())) == pytest.approx(sorted(expected))
    with pytest.raises(plots.PlotError, match="color_by"):
        oph.plot_pixels(color_by="colour")


def test_plot_pixels_splits_a_pixel_across_ra_180():
    polygons, owner = plots.pixel_polygons(
        np.array([0, 0]), np.array([4, 6])
    )  # base pixel 6 spans RA 135..225
    assert list(owner).count(1) == 2 and list(owner).count(0) == 1
    for poly in polygons:
        assert np.ptp(poly[:, 0]) <= np.pi


def test_pixel_counts_and_plot_density_equal_brute_force(oph, source):
    import cdshealpix.nested as nested
    from astropy.coordinates import Latitude, Longitude
    from matplotlib.collections import QuadMesh

    def brute(ra, dec, order):
        pix = nested.lonlat_to_healpix(
            Longitude(np.asarray(ra), "deg"), Latitude(np.asarray(dec), "deg"), order
        )
        return pd.Series(pix).value_counts().sort_index()

    for order in (3, 6, 9):  # the point map (order 10 here), degraded
        got = oph.pixel_counts(order)
        want = brute(source["ra"], source["dec"], order)
        assert got.to_dict() == want.to_dict() and got.sum() == 2300
    cone = oph.cone_search(246.8, -24.5, 1800)  # filtered: counted from the rows
    rows = cone.compute()
    assert cone.pixel_counts(7).to_dict() == brute(rows.ra, rows.dec, 7).to_dict()

    fig = oph.plot_density(order=6)
    ax = fig.axes[0]
    assert ax.name == "mollweide" and "order 6" in ax.get_title()
    [mesh] = [c for c in ax.collections if isinstance(c, QuadMesh)]
    values = mesh.get_array()
    area = plots.pixel_area_deg2(6)
    assert values.count() > 0 and values.max() == pytest.approx(oph.pixel_counts(6).max() / area)


def test_to_astropy_keeps_units_descriptions_and_ucds(oph, source):
    from astropy import units as u

    table = oph.cone_search(246.8, -24.5, 1800).to_astropy()
    assert len(table) > 0
    for name in ("ra", "dec", "parallax", "pmra", "phot_g_mean_mag", "radial_velocity"):
        assert table[name].unit == u.Unit(str(source[name].unit)), name  # the file's unit string, parsed
        assert table[name].description == source[name].description, name
        assert table[name].meta["ucd"] == source[name].meta["ucd"], name
    assert str(table["pmra"].unit) == "mas / yr"
    assert table["source_id"].unit is None
