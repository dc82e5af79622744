"""Damaged catalogs stop every command with an error naming the file; ``verify`` finds each damage
and ``--repair`` rebuilds what the partition files determine.

Real data: the Blanco 1 Gaia DR2 field (14,785 rows, 31 partitions of at most 1,500 rows, 2"
margin) matched against the DR3 field (9,478 pairs within 1", as SOURCES.md reports).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from survey_engine.catalog import build, layout
from survey_engine.catalog.catalog import open_catalog
from survey_engine.catalog.integrity import CatalogIntegrityError, read_checked
from survey_engine.catalog.verify import rebuild_metadata, verify_catalog
from survey_engine.crossmatch import crossmatch
from survey_engine.errors import SurveyEngineError
from survey_engine.ingest.file_import.arguments import ImportArguments
from survey_engine.ingest.file_import.run import run_import
from tests.conftest import shared_path

DR2_ROWS = 14785
PAIRS = 9478


@pytest.fixture(scope="module")
def blanco(tmp_path_factory, client) -> dict:
    """Both Blanco 1 fields imported once; each test damages its own copy of DR2."""
    root = tmp_path_factory.mktemp("blanco")
    dr2 = shared_path("clusters_xmatch/blanco1/blanco1_gaia_dr2_G18_field.parquet")
    dr3 = shared_path("clusters_xmatch/blanco1/blanco1_gaia_dr3_G17_field.parquet")
    run_import(
        ImportArguments([str(dr2)], str(root / "dr2"), id_column="source_id", max_rows=1500, margin_arcsec=2),
        client=client,
        progress=False,
    )
    run_import(
        ImportArguments([str(dr3)], str(root / "dr3"), id_column="SOURCE_ID", max_rows=1500, margin_arcsec=2),
        client=client,
        progress=False,
    )
    ids = np.sort(pd.read_parquet(dr2, columns=["source_id"]).source_id.to_numpy())
    return {"dr2": root / "dr2", "dr3": root / "dr3", "ids": ids}


def _copy(blanco, tmp_path) -> Path:
    out = tmp_path / "dr2"
    shutil.copytree(blanco["dr2"], out)
    return out


def _files(catalog_dir: Path) -> list[Path]:
    """Partition files, largest last (several pages: damage lands in the middle of data)."""
    return sorted(
        catalog_dir.glob("dataset/Norder=*/Dir=*/Npix=*.parquet"), key=lambda p: (p.stat().st_size, str(p))
    )


def _flip_middle(path: Path) -> None:
    """Invert 8 bytes in the middle of the data pages (between the leading magic and the footer)."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size - 8)
        footer = int.from_bytes(f.read(4), "little")
        middle = (4 + size - 8 - footer) // 2
        f.seek(middle)
        chunk = f.read(8)
        f.seek(middle)
        f.write(bytes(b ^ 0xFF for b in chunk))


def _damage(kind: str, coll: Path) -> Path:
    """Damage the DR2 collection ``coll`` one way; returns the file the error must name."""
    main, margin = coll / "dr2", coll / "dr2_2arcsec"
    victim = _files(main)[-1]
    info = main / layout.PARTITION_INFO_FILE
    if kind == "truncated":
        data = victim.read_bytes()
        victim.write_bytes(data[: len(data) // 2])
        return victim
    if kind == "flipped":
        _flip_middle(victim)
        return victim
    if kind == "deleted":
        victim.unlink()
        return victim
    if kind == "info_row_missing":
        df = pd.read_csv(info)
        df.iloc[1:].to_csv(info, index=False)
        return info
    if kind == "info_row_extra":
        df = pd.read_csv(info)
        pd.concat([df, pd.DataFrame({"Norder": [7], "Npix": [1]})]).to_csv(info, index=False)
        return info
    if kind == "metadata_stale":  # _metadata written when one partition was not there yet
        keys = sorted(layout.pixel_from_path(str(p.relative_to(main / "dataset"))) for p in _files(main))
        keep = [k for k in keys if k != layout.pixel_from_path(str(victim))]
        layout.write_dataset_metadata(
            main,
            [k[0] for k in keep],
            [k[1] for k in keep],
            pq.read_schema(main / "dataset" / "_common_metadata"),
        )
        return main / "dataset" / "_metadata"
    if kind == "hats_nrows":
        props = main / layout.PROPERTIES_FILE
        props.write_text(props.read_text().replace(f"hats_nrows={DR2_ROWS}", f"hats_nrows={DR2_ROWS - 700}"))
        return props
    if kind == "margin_deleted":
        gone = _files(margin)[-1]
        gone.unlink()
        return gone
    raise AssertionError(kind)


# one case of each kind in the fast subset (20-40 s each on 2 cores), the rest marked slow
METADATA_CASES = [
    "info_row_missing",
    *(
        pytest.param(kind, marks=pytest.mark.slow)
        for kind in ("info_row_extra", "metadata_stale", "hats_nrows")
    ),
]
DATA_CASES = ["truncated", *(pytest.param(kind, marks=pytest.mark.slow) for kind in ("flipped", "deleted"))]


def _all_commands_fail(blanco, coll: Path, named: Path, on_open: bool = True) -> None:
    """open + row count, compute and cross-match (DR2 as the right side, its margin needed) all stop."""

    def count():
        return open_catalog(coll).row_count()

    def compute():
        return len(open_catalog(coll).compute())

    def match():
        return len(crossmatch(open_catalog(blanco["dr3"]), open_catalog(coll), 1.0).compute())

    for run in (compute, match):
        with pytest.raises(CatalogIntegrityError, match=str(named.name)) as err:
            run()
        assert str(named) in str(err.value)
    if on_open:  # a flipped byte is found reading the pages; opening reads none
        with pytest.raises(CatalogIntegrityError, match=str(named.name)):
            count()


def _reads_whole(blanco, coll: Path) -> None:
    cat = open_catalog(coll)
    frame = cat.compute()
    assert cat.row_count() == len(frame) == DR2_ROWS
    assert np.array_equal(np.sort(frame.source_id.to_numpy()), blanco["ids"])
    assert len(crossmatch(open_catalog(blanco["dr3"]), cat, 1.0).compute()) == PAIRS


def test_intact_catalog_reads_and_verifies(blanco, client):
    _reads_whole(blanco, blanco["dr2"])
    report = verify_catalog(blanco["dr2"], client=client)
    assert report.ok, report.text()
    assert report.rows == DR2_ROWS and report.files == len(_files(blanco["dr2"] / "dr2")) + len(
        _files(blanco["dr2"] / "dr2_2arcsec")
    )
    assert report.margin_rows == open_catalog(blanco["dr2"]).margin.row_count() > 0


@pytest.mark.parametrize("kind", METADATA_CASES)
def test_metadata_damage_stops_commands_and_is_repaired(blanco, client, tmp_path, kind):
    coll = _copy(blanco, tmp_path)
    named = _damage(kind, coll)
    _all_commands_fail(blanco, coll, named)
    report = verify_catalog(coll, client=client)
    assert not report.ok
    assert all(p.repairable for p in report.problems), report.text()
    assert any(p.path == str(named) for p in report.problems), report.text()
    repaired = verify_catalog(coll, repair=True, client=client)
    assert repaired.ok and repaired.repaired, repaired.text()
    _reads_whole(blanco, coll)


@pytest.mark.parametrize("kind", DATA_CASES)
def test_data_damage_stops_commands_and_is_not_papered_over(blanco, client, tmp_path, kind):
    coll = _copy(blanco, tmp_path)
    named = _damage(kind, coll)
    _all_commands_fail(blanco, coll, named, on_open=kind != "flipped")
    report = verify_catalog(coll, client=client)
    assert not report.ok
    assert [p.path for p in report.problems if not p.repairable] == [str(named)], report.text()
    files_before = sorted(str(p) for p in coll.rglob("*.parquet"))
    info_before = (coll / "dr2" / layout.PARTITION_INFO_FILE).read_text()
    after = verify_catalog(coll, repair=True, client=client)
    # lost rows stay an error: the metadata are not rewritten to match what is left, no file is deleted
    assert not after.ok and "restore it or re-import" in after.repaired[0]
    assert sorted(str(p) for p in coll.rglob("*.parquet")) == files_before
    assert (coll / "dr2" / layout.PARTITION_INFO_FILE).read_text() == info_before
    with pytest.raises(CatalogIntegrityError):
        open_catalog(coll).compute()


@pytest.mark.slow
def test_stale_partition_file_fails_its_read(blanco, client, tmp_path):
    """A partition rewritten (valid, with checksums) after _metadata: caught when it is read."""
    coll = _copy(blanco, tmp_path)
    victim = _files(coll / "dr2")[-1]
    table = pq.read_table(victim)
    order, pix = layout.pixel_from_path(str(victim))
    build.write_partition_file(pa.concat_tables([table, table.slice(0, 5)]), coll / "dr2", order, pix)
    for run in (
        lambda: open_catalog(coll).compute(),
        lambda: crossmatch(open_catalog(blanco["dr3"]), open_catalog(coll), 1.0).compute(),
    ):
        with pytest.raises(
            CatalogIntegrityError,
            match=f"{victim.name}: partition file holds {table.num_rows + 5} rows, "
            f"but the catalog's metadata says {table.num_rows}",
        ):
            run()
    report = verify_catalog(coll, client=client)
    assert {p.path for p in report.problems} >= {
        str(coll / "dr2" / "dataset" / "_metadata"),
        str(coll / "dr2" / layout.PROPERTIES_FILE),
    }
    assert verify_catalog(coll, repair=True, client=client).ok
    assert len(open_catalog(coll).compute()) == open_catalog(coll).row_count() == DR2_ROWS + 5


@pytest.mark.slow
def test_margin_partition_deleted(blanco, client, tmp_path):
    coll = _copy(blanco, tmp_path)
    named = _damage("margin_deleted", coll)
    _all_commands_fail(blanco, coll, named)
    report = verify_catalog(coll, client=client)
    assert [p.path for p in report.problems] == [str(named)]
    repaired = verify_catalog(coll, repair=True, client=client)
    assert repaired.ok and "rebuilt from the main catalog" in repaired.repaired[0], repaired.text()
    assert (coll / "dr2_2arcsec.damaged").is_dir()  # the old margin is kept, not deleted
    _reads_whole(blanco, coll)


@pytest.mark.slow
def test_margin_missing_rows_and_corrupt_margin_found_by_verify(blanco, client, tmp_path):
    """A margin partition short of one row (its metadata consistent with it): only a recomputation
    of the margin finds it; a flipped byte in a margin file is found by reading it."""
    coll = _copy(blanco, tmp_path)
    margin = coll / "dr2_2arcsec"
    short, flipped = _files(margin)[-1], _files(margin)[-2]
    table = pq.read_table(short)
    order, pix = layout.pixel_from_path(str(short))
    build.write_partition_file(table.slice(0, table.num_rows - 1), margin, order, pix)
    rebuild_metadata(margin, layout.read_properties(margin / layout.PROPERTIES_FILE))
    _flip_middle(flipped)
    report = verify_catalog(coll, client=client)
    paths = {p.path: p.what for p in report.problems}
    assert set(paths) == {str(short), str(flipped)}, report.text()
    assert f"margin holds {table.num_rows - 1} rows" in paths[str(short)]
    assert "checksum" in paths[str(flipped)]
    assert verify_catalog(coll, repair=True, client=client).ok
    assert pq.read_metadata(short).num_rows == table.num_rows
    _reads_whole(blanco, coll)


def test_margin_row_inside_its_partition_reported(blanco, client, tmp_path):
    coll = _copy(blanco, tmp_path)
    main, margin = coll / "dr2", coll / "dr2_2arcsec"
    target = _files(margin)[-1]
    order, pix = layout.pixel_from_path(str(target))
    own = pq.read_table(layout.partition_path(main, order, pix))
    table = pq.read_table(target)
    # a row of the partition itself, put into its own margin
    build.write_partition_file(pa.concat_tables([table, own.slice(0, 1)]), margin, order, pix)
    rebuild_metadata(margin, layout.read_properties(margin / layout.PROPERTIES_FILE))
    report = verify_catalog(coll, client=client)
    assert any(
        p.path == str(target) and "1 margin rows lie inside the partition itself" in p.what
        for p in report.problems
    ), report.text()


def test_truncated_footer_and_missing_file_name_the_file(tmp_path):
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"a": np.arange(1000)}), path, write_page_checksum=True)
    data = path.read_bytes()
    path.write_bytes(data[:-3])
    with pytest.raises(CatalogIntegrityError, match=f"{path}: partition file unreadable"):
        read_checked(path)
    with pytest.raises(CatalogIntegrityError, match="partition file missing"):
        read_checked(tmp_path / "gone.parquet")
    assert issubclass(CatalogIntegrityError, SurveyEngineError)


def test_written_partitions_carry_page_checksums(blanco):
    """Every partition file the import wrote detects a flipped byte in any data page."""
    victim = _files(blanco["dr2"] / "dr2")[0]
    copy = Path(os.environ.get("TMPDIR", "/tmp")) / f"se-checksum-{os.getpid()}.parquet"
    shutil.copy(victim, copy)
    try:
        _flip_middle(copy)
        with pytest.raises(CatalogIntegrityError, match="checksum"):
            read_checked(copy)
    finally:
        copy.unlink()


@pytest.mark.slow
def test_verify_cli_exit_codes(blanco, client, tmp_path, capsys):
    from survey_engine.cli import main

    assert main(["verify", str(blanco["dr2"])]) == 0
    assert "OK" in capsys.readouterr().out
    coll = _copy(blanco, tmp_path)
    named = _damage("info_row_missing", coll)
    assert main(["verify", str(coll)]) == 1
    out = capsys.readouterr().out
    assert "DAMAGED" in out and str(named) in out
    assert main(["verify", str(coll), "--repair"]) == 0
    assert "repaired:" in capsys.readouterr().out
    assert main(["verify", str(tmp_path / "nothing")]) == 2
    named = _damage("deleted", coll)
    assert main(["info", str(coll)]) == 2
    assert str(named) in capsys.readouterr().err


@pytest.mark.slow
def test_hats_import_collection_passes_the_checks_and_verify(tmp_path, client):
    """hats-import's own layout (its _metadata, margin from border pixels) opens and verifies clean;
    a row dropped from its partition_info.csv is caught there too."""
    from hats_import.collection.arguments import CollectionArguments
    from hats_import.pipeline import pipeline_with_client

    src = shared_path("clusters_xmatch/blanco1/blanco1_gaia_dr3_G17_field.parquet")
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
    coll = tmp_path / "blanco1"
    assert len(open_catalog(coll).compute()) == pq.read_metadata(src).num_rows
    report = verify_catalog(coll, client=client)
    assert report.ok, report.text()
    assert report.rows == pq.read_metadata(src).num_rows and report.margin_rows > 0
    info = coll / "blanco1" / layout.PARTITION_INFO_FILE
    pd.read_csv(info).iloc[1:].to_csv(info, index=False)
    with pytest.raises(CatalogIntegrityError, match="partition_info.csv"):
        open_catalog(coll)
    assert verify_catalog(coll, repair=True, client=client).ok
    assert len(open_catalog(coll).compute()) == pq.read_metadata(src).num_rows
