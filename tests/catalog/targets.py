"""The target list the remote-catalog tests cross-match: 300 sources nearest (200, 30) deg of a sky
catalog, moved by up to 0.3", imported as a local one-partition catalog (shared by
tests/catalog/test_remote.py and tests/jobs/test_netns.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from survey_engine import open_catalog


def near_targets(sky_path, out: Path, client) -> tuple[pd.DataFrame, object]:
    """The 300 targets as a frame (``target_id``, ``source``: the sky row's ``source_id``, ``ra``,
    ``dec``) and as the catalog imported from it into ``out/targets``."""
    from survey_engine.ingest.file_import.arguments import ImportArguments
    from survey_engine.ingest.file_import.run import run_import

    sky = open_catalog(sky_path).compute()
    ra, dec = np.radians(sky.ra.to_numpy()), np.radians(sky.dec.to_numpy())
    centre = np.radians([200.0, 30.0])
    cos_sep = np.sin(dec) * np.sin(centre[1]) + np.cos(dec) * np.cos(centre[1]) * np.cos(ra - centre[0])
    near = sky.iloc[np.argsort(-cos_sep)[:300]]
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(
        {
            "target_id": np.arange(300),
            "source": near.source_id.to_numpy(),
            "ra": near.ra.to_numpy()
            + rng.uniform(-0.3, 0.3, 300) / 3600 / np.cos(np.radians(near.dec.to_numpy())),
            "dec": near.dec.to_numpy() + rng.uniform(-0.3, 0.3, 300) / 3600,
        }
    )
    frame.to_parquet(out / "targets.parquet")
    run_import(
        ImportArguments(
            [str(out / "targets.parquet")], str(out / "targets"), id_column="target_id", margin_arcsec=None
        ),
        client=client,
        progress=False,
    )
    return frame, open_catalog(out / "targets")
