"""Attaching detections to objects as nested light curves, then variability features on the cluster."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from survey_engine.catalog.catalog import open_catalog
from survey_engine.ingest.file_import.arguments import ImportArguments
from survey_engine.ingest.file_import.run import run_import
from survey_engine.ingest.lightcurves import LightcurveArguments, attach_lightcurves
from survey_engine.ingest.readers import InputError
from survey_engine.mock.lightcurves import write_mock_lightcurves


@pytest.fixture(scope="module")
def lc_sky(tmp_path_factory, client):
    root = tmp_path_factory.mktemp("lcsky")
    counts = write_mock_lightcurves(
        300, root / "mock", seed=11, cadence="dense", client=client, progress=False
    )
    run_import(
        ImportArguments(
            [str(root / "mock" / "objects")],
            str(root / "objects"),
            id_column="object_id",
            max_rows=60,
            margin_arcsec=0,
        ),
        client=client,
        progress=False,
    )
    return root, counts


def test_every_detection_lands_in_its_object_sorted_by_time(lc_sky, client):
    root, counts = lc_sky
    result = attach_lightcurves(
        LightcurveArguments(str(root / "objects"), [str(root / "mock" / "detections")], str(root / "nested")),
        client=client,
        progress=False,
    )
    assert result.detections == counts["detections"] and result.unmatched_detections == 0
    assert result.objects == counts["objects"] == result.objects_with_detections
    cat = open_catalog(root / "nested")
    assert not [p for p in (root / "nested").rglob("*") if "shards" in p.name or p.name.startswith(".")]
    assert cat.npartitions == open_catalog(root / "objects").npartitions > 1
    source = pd.read_parquet(root / "mock" / "detections")
    seen, mag_sum = 0, 0.0
    for f in cat.partition_files():
        table = pq.read_table(f, columns=["object_id", "lc"]).to_pylist()
        for row in table:
            lc = row["lc"]
            assert len(lc["time"]) == len(lc["mag"]) == len(lc["band"])
            assert np.all(np.diff(lc["time"]) >= 0)
            mine = source[source["object_id"] == row["object_id"]] if seen < 40 else None
            if mine is not None:  # the exact detections of this object, in time order
                mine = mine.sort_values("time", kind="stable")
                assert np.array_equal(mine["mag"].to_numpy(), np.asarray(lc["mag"]))
            seen += 1
            mag_sum += float(np.sum(lc["mag"]))
    assert seen == counts["objects"]
    assert mag_sum == pytest.approx(float(source["mag"].sum()), rel=1e-12)


def test_lsdb_reads_the_light_curves_as_nested(lc_sky, client):
    import lsdb

    root, _ = lc_sky
    if not (root / "nested").exists():
        attach_lightcurves(
            LightcurveArguments(
                str(root / "objects"), [str(root / "mock" / "detections")], str(root / "nested")
            ),
            client=client,
            progress=False,
        )
    cat = lsdb.open_catalog(root / "nested")
    assert str(cat.dtypes["lc"]).startswith("nested<time: [double], mag: [double], mag_err: [double], band:")
    frame = cat.compute()
    assert len(frame) == 300
    assert frame["lc"].nest.to_flat().shape[0] == len(pd.read_parquet(root / "mock" / "detections"))


def test_unmatched_detections_are_counted_or_refused(lc_sky, client, tmp_path):
    root, counts = lc_sky
    extra = pd.DataFrame(
        {
            "object_id": [10**9, 10**9 + 1],
            "time": [1.0, 2.0],
            "band": ["r", "r"],
            "mag": [15.0, 15.1],
            "mag_err": [0.01, 0.01],
        }
    )
    extra.to_parquet(tmp_path / "stray.parquet")
    inputs = [str(root / "mock" / "detections"), str(tmp_path / "stray.parquet")]
    r = attach_lightcurves(
        LightcurveArguments(str(root / "objects"), inputs, str(tmp_path / "out")),
        client=client,
        progress=False,
    )
    assert r.unmatched_detections == 2 and r.detections == counts["detections"]
    with pytest.raises(InputError, match="no object's"):
        attach_lightcurves(
            LightcurveArguments(str(root / "objects"), inputs, str(tmp_path / "out2"), require_objects=True),
            client=client,
            progress=False,
        )
    assert not (tmp_path / "out2").exists()
    with pytest.raises(InputError, match="no object id column 'nope'"):
        attach_lightcurves(
            LightcurveArguments(str(root / "objects"), inputs, str(tmp_path / "out3"), object_id="nope"),
            client=client,
            progress=False,
        )


@pytest.mark.slow
def test_variability_features_per_band_on_the_cluster(lc_sky, client):
    from survey_engine.features.variability import variability_catalog

    root, counts = lc_sky
    if not (root / "nested").exists():
        attach_lightcurves(
            LightcurveArguments(
                str(root / "objects"), [str(root / "mock" / "detections")], str(root / "nested")
            ),
            client=client,
            progress=False,
        )
    result = variability_catalog(
        str(root / "nested"), str(root / "variability"), client=client, progress=False
    )
    assert result.rows == counts["objects"]
    frame = open_catalog(root / "variability").compute()
    assert "lc" not in frame.columns and {"g_period", "r_period", "g_stetson_j", "r_fourier_r21"} <= set(
        frame.columns
    )
    rr = frame[frame["var_class"].isin(["RRAB", "RRC"])]
    rel = np.abs(rr["r_period"] - rr["period"]) / rr["period"]
    assert len(rr) >= 40 and (rel < 1e-3).mean() >= 0.95
    const = frame[frame["var_class"] == "CONST"]
    assert const["r_stetson_j"].median() < 1.0 < rr["r_stetson_j"].median()


def test_detections_from_elsewhere_among_the_shards_stop_the_build(lc_sky, tmp_path, threads, monkeypatch):
    """A shard file that no routing task of this build wrote (a late task of an earlier build into
    the same ``OUT.partial``, say) would add points to light curves: every routed detection is
    nested exactly once, or the build stops before anything is published."""
    import shutil
    from pathlib import Path

    from survey_engine.ingest import lightcurves

    root, _ = lc_sky
    real = lightcurves._map_chunk

    def and_a_stray_copy(*args):
        routed = real(*args)
        shard = next(Path(args[5]).rglob("*.parquet"))  # args[5]: the shard folder
        shutil.copy(shard, shard.with_name(f"stray-{shard.name}"))
        return routed

    monkeypatch.setattr(lightcurves, "_map_chunk", and_a_stray_copy)
    out = tmp_path / "nested"
    with pytest.raises(RuntimeError, match=r"internal check failed: [\d,]+ detections were routed"):
        attach_lightcurves(
            LightcurveArguments(str(root / "objects"), [str(root / "mock" / "detections")], str(out)),
            client=threads,
            progress=False,
        )
    assert not out.exists()


def test_a_routing_task_run_again_replaces_its_own_shards(lc_sky, tmp_path):
    """A task run again after its worker was lost writes the same shard files over, so its
    detections are not nested twice (the files were named by a random token per run)."""
    from pathlib import Path

    from survey_engine.catalog.owner import claim
    from survey_engine.ingest import lightcurves
    from survey_engine.ingest.readers import expand_inputs, plan_chunks

    root, counts = lc_sky
    args = LightcurveArguments(
        str(root / "objects"), [str(root / "mock" / "detections")], str(tmp_path / "x")
    )
    objects = open_catalog(args.objects, margin=None)
    ids, parts = lightcurves._object_ids(objects.partition_files(), args.object_id)
    chunk = plan_chunks(expand_inputs(args.detections), chunk_rows=args.batch_rows)[0]
    shard_root = tmp_path / "staging" / "shards"
    shard_root.mkdir(parents=True)
    owner = claim(tmp_path / "staging")
    call = (chunk, [args.id, *args.nested_fields()], args.id, ids, parts, str(shard_root), 5_000, 0, owner)

    def shards() -> dict[str, int]:
        return {
            str(p.relative_to(shard_root)): pq.read_metadata(p).num_rows
            for p in shard_root.rglob("*")
            if p.is_file()
        }

    routed, unmatched = lightcurves._map_chunk(*call)
    once = shards()
    assert routed == sum(once.values()) > 0 and unmatched == 0 and len(once) > 1
    assert lightcurves._map_chunk(*call) == (routed, unmatched)
    assert shards() == once
    assert not [p for p in Path(shard_root).rglob(".*")]  # no temporary left
