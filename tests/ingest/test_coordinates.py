"""``import`` without --ra/--dec: RA/Dec found from the UCDs of real VOTables and FITS files, else
by name, else an error listing the candidates."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from survey_engine.catalog.catalog import open_catalog
from survey_engine.ingest.coordinates import describe_columns, find_coordinates
from survey_engine.ingest.file_import.arguments import ImportArguments
from survey_engine.ingest.file_import.run import run_import
from survey_engine.ingest.readers import InputError
from tests.conftest import shared_path

OPH_MEMBERS = "clusters_xmatch/rho_oph/tab_3.vot"  # 532 rows; ra/dec carry pos.eq.ra;meta.main
SIMBAD = "clusters_xmatch/ngc2323/ngc2323_simbad_region.vot.xml"
NO_POSITIONS = "votable/astroquery/vizier/tests/data/kang2010.xml"  # only _Glon/_Glat


def test_real_votables_declare_the_main_position(tmp_path):
    cols = {c.name: c for c in describe_columns(str(shared_path(OPH_MEMBERS)))}
    assert cols["ra"].ucd == "pos.eq.ra;meta.main" and cols["dec"].ucd == "pos.eq.dec;meta.main"
    assert cols["pmra"].ucd == "pos.pm;pos.eq.ra"  # a proper motion is not a position
    assert find_coordinates(str(shared_path(OPH_MEMBERS))) == ("ra", "dec")


def test_the_ucd_finds_columns_whatever_their_names(tmp_path, client):
    """The real VOTable with its position columns renamed as VizieR names them: found by UCD alone
    (pmra, also about pos.eq.ra, is passed over) and imported with them."""
    from astropy.io.votable import parse

    vot = parse(str(shared_path(OPH_MEMBERS)))
    table = vot.get_first_table()
    original = table.to_table(use_names_over_ids=True)
    for field in table.fields:
        if field.name in ("ra", "dec"):
            field.name = field.ID = {"ra": "RA_ICRS", "dec": "DE_ICRS"}[field.name]
    path = tmp_path / "members.vot"
    vot.to_xml(str(path))
    assert find_coordinates(str(path)) == ("RA_ICRS", "DE_ICRS")

    args = ImportArguments([str(path)], str(tmp_path / "members"), margin_arcsec=None)
    assert (args.ra_column, args.dec_column) == ("RA_ICRS", "DE_ICRS")
    run_import(args, client=client, progress=False)
    cat = open_catalog(tmp_path / "members")
    assert (cat.ra_column, cat.dec_column) == ("RA_ICRS", "DE_ICRS") and cat.row_count() == len(
        original
    ) == 532
    got = cat.compute().sort_values("RA_ICRS")
    assert np.array_equal(got.RA_ICRS.to_numpy(), np.sort(np.asarray(original["ra"])))


def test_a_text_column_with_the_main_ucd_is_passed_over():
    """SIMBAD's RA_2/DEC_2 (sexagesimal text) carry pos.eq.ra;meta.main; the numeric RA/DEC do not."""
    cols = {c.name: c for c in describe_columns(str(shared_path(SIMBAD)))}
    assert cols["RA_2"].ucd == "pos.eq.ra;meta.main" and not cols["RA_2"].numeric and cols["RA"].numeric
    assert find_coordinates(str(shared_path(SIMBAD))) == ("RA", "DEC")


def test_fits_tucd_keywords(tmp_path):
    from astropy.io import fits
    from astropy.table import Table

    src = Table.read(str(shared_path("clusters_xmatch/ngc2323/ngc2323_gaia_field.fits")))[:200]
    src.rename_columns(["ra", "dec"], ["alpha", "delta"])
    hdu = fits.table_to_hdu(src)
    names = list(hdu.columns.names)
    hdu.header[f"TUCD{names.index('alpha') + 1}"] = "pos.eq.ra;meta.main"
    hdu.header[f"TUCD{names.index('delta') + 1}"] = "pos.eq.dec;meta.main"
    path = tmp_path / "field.fits"
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)
    assert find_coordinates(str(path)) == ("alpha", "delta")
    assert find_coordinates(str(path), ra="alpha", dec="auto") == ("alpha", "delta")


def test_plain_pos_eq_ucd_and_names_any_case(tmp_path):
    n = 5
    plain = pa.schema(
        [
            pa.field("lon", pa.float64(), metadata={b"ucd": b"pos.eq.ra"}),
            pa.field("lat", pa.float64(), metadata={b"ucd": b"pos.eq.dec"}),
        ]
    )
    pq.write_table(
        pa.table({"lon": np.zeros(n), "lat": np.zeros(n)}, schema=plain), tmp_path / "plain.parquet"
    )
    assert find_coordinates(str(tmp_path / "plain.parquet")) == ("lon", "lat")
    (tmp_path / "named.csv").write_text("id,RA,Dec\n1,10.0,20.0\n")
    assert find_coordinates(str(tmp_path / "named.csv")) == ("RA", "Dec")


def test_no_position_is_an_error_naming_the_file_and_the_flag(tmp_path):
    path = str(shared_path(NO_POSITIONS))
    with pytest.raises(
        InputError, match=r"kang2010.xml: cannot tell which column holds RA: .*pass --ra COLUMN"
    ) as err:
        find_coordinates(path)
    assert "_Glon" in str(err.value)  # the columns are listed when nothing looks like RA
    (tmp_path / "vizier.csv").write_text("Seq,RAJ2000,DEJ2000,pmRA\n1,10.0,20.0,3\n")
    with pytest.raises(InputError, match=r"candidates: RAJ2000; pass --ra COLUMN"):
        find_coordinates(str(tmp_path / "vizier.csv"))
    with pytest.raises(InputError, match=r"candidates: DEJ2000; pass --dec COLUMN"):
        find_coordinates(str(tmp_path / "vizier.csv"), ra="RAJ2000")


def test_two_plain_ra_ucds_without_a_main_one_are_ambiguous(tmp_path):
    schema = pa.schema(
        [
            pa.field(name, pa.float64(), metadata={b"ucd": ucd})
            for name, ucd in (("ra_a", b"pos.eq.ra"), ("ra_b", b"pos.eq.ra"), ("de", b"pos.eq.dec;meta.main"))
        ]
    )
    pq.write_table(pa.table({n: np.zeros(2) for n in schema.names}, schema=schema), tmp_path / "two.parquet")
    with pytest.raises(
        InputError, match=r"several columns have UCD pos.eq.ra .*ra_a \(UCD pos.eq.ra\), ra_b"
    ):
        find_coordinates(str(tmp_path / "two.parquet"))


def test_the_cli_default_is_auto():
    from survey_engine.cli import build_parser

    args = build_parser().parse_args(["import", "x.csv", "--out", "y"])
    assert (args.ra, args.dec) == ("auto", "auto")
