"""A staging folder's owner: a task of a write that another write has replaced, or that has ended,
writes nothing (the cross-match and import tests show it with a task really running late)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from survey_engine.catalog import build, owner
from survey_engine.catalog.owner import AbandonedWriteError, claim, held, release


def _table(n: int = 50) -> pa.Table:
    return pa.table({"_healpix_29": np.arange(n, dtype=np.int64), "ra": np.linspace(0, 1, n)})


def _everything(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_claim_holds_until_another_write_claims_the_folder_or_it_is_released(tmp_path):
    first = claim(tmp_path)
    first.check()
    assert held(tmp_path) == first
    second = claim(tmp_path)
    assert second.token != first.token
    second.check()
    with pytest.raises(AbandonedWriteError, match="now belongs to another write") as exc:
        first.check()
    assert str(tmp_path) in str(exc.value)
    release(tmp_path)
    with pytest.raises(AbandonedWriteError, match="no longer exists"):
        second.check()
    assert _everything(tmp_path) == []


def test_held_is_this_process_s_own_claim_not_the_token_found_in_the_folder(tmp_path):
    """A write hands its tasks ``held(staging)``: if another write (another process) has stamped the
    folder meanwhile, the tasks get this write's claim, which that stamp refuses, not the other's."""
    with pytest.raises(AbandonedWriteError, match="holds no claim"):
        held(tmp_path)
    mine = claim(tmp_path)
    (tmp_path / owner.OWNER_FILE).write_text("a-token-of-another-process")
    assert held(tmp_path) == mine
    with pytest.raises(AbandonedWriteError, match="now belongs to another write"):
        held(tmp_path).check()
    release(tmp_path)
    with pytest.raises(AbandonedWriteError, match="holds no claim"):
        held(tmp_path)


def test_an_abandoned_write_s_partition_file_is_not_written(tmp_path):
    staging = tmp_path / "out.partial"
    staging.mkdir()
    late = claim(staging)
    build.write_partition_file(_table(), staging / "cat", 3, 17, late)  # its own folder: written
    assert len(list(staging.rglob("Npix=17.parquet"))) == 1
    current = claim(staging)
    with pytest.raises(AbandonedWriteError):
        build.write_partition_file(_table(), staging / "cat", 3, 18, late)
    assert not list(staging.rglob("Npix=18*")) and not list(staging.rglob(build.UNFINISHED_GLOB))
    build.write_partition_file(_table(), staging / "cat", 3, 18, current)
    assert len(list(staging.rglob("Npix=18.parquet"))) == 1


def test_a_write_that_loses_its_folder_while_writing_does_not_rename_its_file_in(tmp_path, monkeypatch):
    """The check right before the rename: the next write claims the folder while this file is written."""
    staging = tmp_path / "out.partial"
    staging.mkdir()
    late = claim(staging)
    real_write = pq.write_table

    def next_write_starts_meanwhile(table, where, **kw):
        real_write(table, where, **kw)
        claim(staging)

    monkeypatch.setattr(build.pq, "write_table", next_write_starts_meanwhile)
    with pytest.raises(AbandonedWriteError):
        build.write_partition_file(_table(), staging / "cat", 3, 17, late)
    assert not list(staging.rglob("*.parquet*"))  # neither the file nor its temporary


def test_a_task_of_an_ended_write_creates_nothing_where_its_folder_was(tmp_path):
    staging = tmp_path / "out.partial"
    staging.mkdir()
    late = claim(staging)
    release(staging)
    staging.rmdir()  # the write published its folder, or removed it
    with pytest.raises(AbandonedWriteError, match="no longer exists"):
        build.write_partition_file(_table(), staging / "cat", 3, 17, late)
    assert not staging.exists()


def test_a_shard_of_an_abandoned_split_is_neither_published_nor_left_half_written(tmp_path):
    staging = tmp_path / "out.partial"
    staging.mkdir()
    late = claim(staging)
    shard = str(staging / "main_000000.arrow")
    writer = build._ShardWriter(shard, pa.schema([("_healpix_29", pa.int64()), ("ra", pa.float64())]), late)
    writer.write_grouped(_table(), np.zeros(50, dtype=np.int64))
    claim(staging)
    with pytest.raises(AbandonedWriteError):
        writer.close()
    assert build.ShardIndex.load(shard) is None
    assert _everything(staging) == [owner.OWNER_FILE]


def test_writes_without_an_owner_are_unchanged(tmp_path):
    path = build.write_partition_file(_table(), tmp_path / "cat", 3, 17)
    assert pq.read_table(path).num_rows == 50
    assert _everything(tmp_path / "cat") == ["dataset", "dataset/Norder=3", "dataset/Norder=3/Dir=0"] + [
        "dataset/Norder=3/Dir=0/Npix=17.parquet"
    ]


def test_a_split_that_loses_its_folder_stops_with_that_error_and_leaves_no_shard(tmp_path):
    """Main and margin shards of one chunk: the folder changes hands between two batches, so both
    writers are dropped; the error reported is the ownership one (not a second close's), and no
    temporary of either is left among the next write's files."""
    from survey_engine.catalog.margins import MarginPlan
    from survey_engine.catalog.partitioning import PartitionPlan

    staging = tmp_path / "out.partial"
    staging.mkdir()
    late = claim(staging)
    plan = PartitionPlan.from_arrays(np.zeros(12), np.arange(12), np.zeros(12))
    schema = pa.schema([("_healpix_29", pa.int64()), ("ra", pa.float64()), ("dec", pa.float64())])
    spec = build.SplitSpec(plan, "ra", "dec", schema, MarginPlan.build(plan, 600.0))
    rng = np.random.default_rng(3)

    def batches():
        for _ in range(2):
            ra, dec = rng.uniform(0, 360, 1_000), rng.uniform(-89, 89, 1_000)
            yield pa.table({"ra": ra, "dec": dec})
            claim(staging)  # the next write starts over after the first batch

    with pytest.raises(AbandonedWriteError, match="now belongs to another write"):
        build.split_batches(
            batches(),
            spec,
            str(staging / "main_000000.arrow"),
            str(staging / "margin_000000.arrow"),
            owner=late,
        )
    assert _everything(staging) == [owner.OWNER_FILE]


@pytest.mark.parametrize("meanwhile", ["removed", "claimed"])
def test_folders_are_made_only_while_the_write_owns_its_staging_folder(tmp_path, monkeypatch, meanwhile):
    """Between the first check and the mkdirs the next write removes the staging folder (it starts
    over) or claims it: no folder of the late task is left, and its error says what happened."""
    import shutil

    staging = tmp_path / "out.partial"
    staging.mkdir()
    late = claim(staging)
    real_check, calls = owner.Owner.check, []

    def next_write_acts_after_the_first_check(self):
        real_check(self)
        if not calls:
            calls.append(1)
            shutil.rmtree(staging) if meanwhile == "removed" else claim(staging)

    monkeypatch.setattr(owner.Owner, "check", next_write_acts_after_the_first_check)
    message = "no longer exists" if meanwhile == "removed" else "now belongs to another write"
    with pytest.raises(AbandonedWriteError, match=message):
        owner.make_dirs(staging / "cat" / "dataset" / "Norder=3", late)
    assert (not staging.exists()) if meanwhile == "removed" else _everything(staging) == [owner.OWNER_FILE]
