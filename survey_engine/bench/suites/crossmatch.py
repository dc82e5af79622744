"""crossmatch suite: survey_engine against LSDB, astropy and one global cKDTree, each tool in a fresh
process (``bench/xm_peer.py``), cold and warm, with the same pair set."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from survey_engine.bench.measure import run_summary
from survey_engine.bench.suites.common import (
    bench_row,
    local_cluster,
    not_run_row,
    peer_allowed,
    peer_missing,
    peer_process,
    repeat_plan,
)


def pair_inputs(n: int, seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    a = pd.DataFrame({"id": np.arange(n, dtype=np.int64), "ra": rng.uniform(0, 360, n), "dec": np.degrees(np.arcsin(rng.uniform(-1, 1, n)))})
    sigma = 0.35 / 3600
    cosd = np.maximum(np.cos(np.radians(a.dec.to_numpy())), 1e-6)
    b = pd.DataFrame({"ra": (a.ra + rng.normal(0, sigma, n) / cosd) % 360, "dec": np.clip(a.dec + rng.normal(0, sigma, n), -90, 90)})
    extra = n // 5
    b = pd.concat([b, pd.DataFrame({"ra": rng.uniform(0, 360, extra), "dec": np.degrees(np.arcsin(rng.uniform(-1, 1, extra)))})], ignore_index=True)
    b.insert(0, "id", np.arange(len(b), dtype=np.int64) + 10**10)
    return a, b


XM_SMALL_PARTITIONS = 40  # LSDB also runs on catalogs of n / 40 rows per partition: its best size is not ours


def run(sizes, repeats, workers, work: Path, peer_limits=None, radius: float = 1.0,
                     partition_rows: int | None = None) -> list[dict]:
    """Nearest neighbour within ``radius`` of A (n uniform rows) in B (A jittered by 0.35" per axis
    plus n/5 extra rows): survey_engine, LSDB (on the same catalogs, at most ``partition_rows`` rows
    per partition, default n/10, and on n/40-row partitions),
    astropy and one global cKDTree, each in a fresh process (``bench/xm_peer.py``): a cold run
    (imports, opening, matching) then warm runs. The driver keeps only the truth and one tool's
    pair array at a time, so 5x10^7 rows fit this machine."""
    from survey_engine.catalog.catalog import open_catalog
    from survey_engine.ingest.file_import.arguments import ImportArguments
    from survey_engine.ingest.file_import.run import run_import

    out_rows = []
    for n in sizes:
        plan = repeat_plan(n, repeats)
        a, b = pair_inputs(n)
        case = f"{n} x {len(b)}" + (f", partitions of {partition_rows:,} rows" if partition_rows else "")
        files = {"A": work / f"xm_A_{n}.parquet", "B": work / f"xm_B_{n}.parquet"}
        a.to_parquet(files["A"])
        b.to_parquet(files["B"])
        del a, b
        layouts = {"default": partition_rows or max(20_000, n // 10)}
        missing = {tool: peer_missing(tool, tool) for tool in ("lsdb", "astropy")}  # module and distribution names agree
        if peer_allowed("crossmatch", n, peer_limits, "lsdb") and not missing["lsdb"]:
            layouts["small"] = max(5_000, n // XM_SMALL_PARTITIONS)
        cats: dict[tuple[str, str], Path] = {}
        with local_cluster(workers) as client:  # closed before the tools run: each starts its own
            for lay, max_rows in layouts.items():
                for name, margin in (("A", 0.0), ("B", 5.0)):
                    out = work / f"xm_{name}_{n}_{lay}"
                    shutil.rmtree(out, ignore_errors=True)
                    run_import(ImportArguments([str(files[name])], str(out), id_column="id", max_rows=max_rows, margin_arcsec=margin),
                               client=client, progress=False)
                    cats[(name, lay)] = out
        parts = {lay: len(open_catalog(cats[("A", lay)]).partitions) for lay in layouts}

        def run_tool(tool, lay="default"):
            spec = {"left": str(cats[("A", lay)]), "right": str(cats[("B", lay)]), "left_file": str(files["A"]), "right_file": str(files["B"]),
                    "radius": radius, "workers": workers, "runs": 1 + plan["repeats"], "pairs_out": str(work / f"xm_pairs_{tool}_{lay}_{n}.npy")}
            return peer_process("survey_engine.bench.xm_peer", [tool, json.dumps(spec)], f"cross-match benchmark of {tool}"), spec["pairs_out"]

        truth_res, truth_file = run_tool("ckdtree_global")
        truth = np.load(truth_file)
        tools = [("ckdtree_global", "ckdtree_global", "default"), ("survey_engine", "survey_engine", "default"), ("lsdb", "lsdb", "default"),
                 ("lsdb_small_partitions", "lsdb", "small"), ("astropy", "astropy", "default")]
        for label, tool, lay in tools:
            if label != "ckdtree_global" and tool != "survey_engine" and not peer_allowed("crossmatch", n, peer_limits, tool):
                out_rows.append(not_run_row("crossmatch", case, label, n, workers, peer_limits))
                continue
            if missing.get(tool):
                out_rows.append(bench_row("crossmatch", case, label, n, workers, note=missing[tool]))
                continue
            if lay not in layouts:
                continue
            try:
                res, pairs_file = (truth_res, truth_file) if label == "ckdtree_global" else run_tool(tool, lay)
            except ImportError as exc:
                out_rows.append(bench_row("crossmatch", case, label, n, workers, note=f"not installed: {exc}"))
                continue
            agree = True if label == "ckdtree_global" else bool(np.array_equal(np.load(pairs_file), truth))
            note = f"partitions: {parts[lay]} left" if tool in ("survey_engine", "lsdb") else "in-memory arrays; cold includes reading the Parquet inputs"
            warm, cold = _xm_measure(res["runs"][1:]), _xm_measure(res["runs"][:1])
            out_rows.append(bench_row("crossmatch", case, label, n, workers, warm, agree=agree, pairs=res["pairs"], note=note,
                                 profile=[res["profile"]] if res.get("profile") else None))
            out_rows.append(bench_row("crossmatch", f"{case}, cold", label, n, workers, cold, agree=agree, pairs=res["pairs"],
                                 note=note + "; a fresh process: imports, opening, matching"))
            if label != "ckdtree_global":
                Path(pairs_file).unlink(missing_ok=True)
        del truth
        Path(truth_file).unlink(missing_ok=True)
    return out_rows


def _xm_measure(runs: list[dict]) -> dict:
    return run_summary([r["seconds"] for r in runs], runs[0]["seconds"], 0, max(r["peak_rss_bytes"] for r in runs),
                       max(r["peak_rss_process_bytes"] for r in runs))


