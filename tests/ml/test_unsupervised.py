"""Anomaly scores and PCA as catalog operations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from survey_engine.catalog.catalog import open_catalog
from survey_engine.ml.apply import predict
from survey_engine.ml.options import TrainingError
from survey_engine.ml.unsupervised import train_anomaly, train_pca


def test_injected_oddities_score_highest(client, tmp_path):
    rng = np.random.default_rng(3)
    n = 20_000
    normal = pd.DataFrame({"u": rng.normal(19, 0.5, n)})
    normal["g"] = normal.u - 1.0 + rng.normal(0, 0.05, n)
    normal["r"] = normal.g - 0.5 + rng.normal(0, 0.05, n)
    odd = pd.DataFrame({"u": [19.0] * 10, "g": [21.5] * 10, "r": [17.0] * 10})  # colours no normal row has
    df = pd.concat([normal, odd], ignore_index=True)
    df["row"] = np.arange(len(df))
    df.to_parquet(tmp_path / "t.parquet")
    metrics = train_anomaly(str(tmp_path / "t.parquet"), ["u-g", "g-r"], str(tmp_path / "iso"), client=client)
    assert metrics["rows"] == len(df)
    out = pd.read_parquet(
        predict(
            str(tmp_path / "iso"),
            str(tmp_path / "t.parquet"),
            str(tmp_path / "scored"),
            client=client,
            progress=False,
        )
    )
    top = out.nlargest(10, "anomaly_score")
    assert set(top.row) == set(range(n, n + 10))
    # --where (ADQL's OR read as pandas' or) selects the rows the forest sees; a bad one names the file
    typed = "u < 19 OR g > 21"
    metrics = train_anomaly(
        str(tmp_path / "t.parquet"), ["u-g"], str(tmp_path / "w"), where=typed, client=client
    )
    assert metrics["rows"] == len(df.query("u < 19 or g > 21")) < len(df)
    with pytest.raises(TrainingError, match=r"t\.parquet: --where .*'nosuch' is not defined"):
        train_anomaly(
            str(tmp_path / "t.parquet"), ["u-g"], str(tmp_path / "x"), where="nosuch = 1", client=client
        )
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_pca_matches_scikit_learn_on_the_mock_catalog(client, mock_catalog, tmp_path):
    from sklearn.decomposition import PCA

    feats = ["u-g", "g-r", "r-i", "i-z"]
    metrics = train_pca(str(mock_catalog), feats, str(tmp_path / "pca"), n_components=2, client=client)
    out = predict(
        str(tmp_path / "pca"), str(mock_catalog), str(tmp_path / "with_pca"), client=client, progress=False
    )
    df = open_catalog(out).compute()
    X = np.column_stack([df[a] - df[b] for a, b in (("u", "g"), ("g", "r"), ("r", "i"), ("i", "z"))])
    ok = np.isfinite(X).all(axis=1)
    X = (X[ok] - X[ok].mean(axis=0)) / X[ok].std(axis=0, ddof=1)
    ref = PCA(n_components=2).fit(X)
    assert np.allclose(metrics["explained_variance_ratio"], ref.explained_variance_ratio_, atol=1e-3)
    for i in range(2):
        corr = np.corrcoef(df[f"pca_{i + 1}"].to_numpy()[ok], ref.transform(X)[:, i])[0, 1]
        assert abs(corr) > 0.999  # same component up to sign
