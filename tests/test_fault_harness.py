"""The fault harness's own checks: ``same_output`` (how the fault bench compares outputs too large to
load whole) and ``make_sky`` on several processes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tests import fault_harness as fh


def _collection(root: Path, name: str, frames: dict[int, pd.DataFrame]) -> Path:
    """A minimal collection: partition files of ``name`` and of its margin, with hats.properties."""
    for cat in (name, f"{name}_10arcsec"):
        for pix, frame in frames.items():
            path = root / name / cat / "dataset" / "Norder=0" / "Dir=0" / f"Npix={pix}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
        rows = sum(map(len, frames.values()))
        (root / name / cat / "hats.properties").write_text(f"obs_collection={cat}\nhats_nrows={rows}\n")
    return root / name


FRAMES = {
    0: pd.DataFrame({"ra": [1.0, 2.0, 3.0], "id": [1, 2, 3]}),
    1: pd.DataFrame({"ra": [4.0, 5.0], "id": [4, 5]}),
}


def test_same_output_compares_collections_of_other_names(tmp_path):
    ref = _collection(tmp_path / "a", "ref", FRAMES)
    out = _collection(tmp_path / "b", "out", FRAMES)
    same, why = fh.same_output(ref, out)
    assert same and why == "4 files identical"


def test_same_output_accepts_rows_in_another_order_only(tmp_path):
    ref = _collection(tmp_path / "a", "ref", FRAMES)
    reordered = _collection(tmp_path / "b", "out", {**FRAMES, 0: FRAMES[0].iloc[::-1]})
    assert fh.same_output(ref, reordered) == (True, "4 files identical (2 with rows in another order)")
    changed = FRAMES[0].copy()
    changed.loc[1, "ra"] = 2.5
    same, why = fh.same_output(ref, _collection(tmp_path / "c", "out", {**FRAMES, 0: changed}))
    assert not same and why.endswith("Npix=0.parquet: other rows")


def test_same_output_finds_a_missing_file_and_other_row_counts(tmp_path):
    ref = _collection(tmp_path / "a", "ref", FRAMES)
    fewer = _collection(tmp_path / "b", "out", {0: FRAMES[0]})
    same, why = fh.same_output(ref, fewer)
    assert not same and "Npix=1.parquet" in why
    recount = _collection(tmp_path / "c", "out", FRAMES)
    (recount / "out" / "hats.properties").write_text("hats_nrows=6\n")
    same, why = fh.same_output(ref, recount)
    assert not same and why.startswith("hats_nrows differ")


def test_make_sky_on_two_processes_writes_the_same_files(tmp_path):
    sizes = fh.Sizes(rows=25_000)
    one = fh.make_sky(tmp_path / "one", sizes, block_rows=10_000)
    two = fh.make_sky(tmp_path / "two", sizes, block_rows=10_000, processes=2)
    names = sorted(p.name for p in one.iterdir())
    assert names == sorted(p.name for p in two.iterdir()) and len(names) == 3
    for name in names:
        assert pq.read_table(one / name).equals(pq.read_table(two / name))
