"""Row filters (catalog/row_filter.py): ADQL spellings read as pandas', and filters that cannot
select rows stopped with a message that names the problem."""

from __future__ import annotations

import pandas as pd
import pytest

from survey_engine.arguments import build
from survey_engine.catalog.row_filter import RowFilterError, check_where, normalise_where
from survey_engine.ml.arguments import ClusterArguments, EvaluateArguments, TrainArguments
from survey_engine.ml.options import TrainOptions

ROWS = pd.DataFrame(
    {
        "r": [19.0, 20.5, 22.0, 18.0],
        "spec_class": ["STAR", "GALAXY", "GALAXY", "QSO"],
        "good": [1, 1, 0, 1],
        "o'k": [1, 1, 1, 0],
    }
)


@pytest.mark.parametrize(
    ("typed", "pandas", "kept"),
    [
        ("spec_class = 'GALAXY'", "spec_class == 'GALAXY'", [1, 2]),
        ("r < 21 AND spec_class <> 'STAR'", "r < 21 and spec_class != 'STAR'", [1, 3]),
        ("NOT (r > 20) Or good = 0", "not (r > 20) or good == 0", [0, 2, 3]),
        ("r <= 20.5 and r >= 19 and r != 20.5", "r <= 20.5 and r >= 19 and r != 20.5", [0]),
        # text in quotes is left as written, even where it holds "=", "<>" or "AND"
        ("spec_class == 'A = B AND C <> D'", "spec_class == 'A = B AND C <> D'", []),
        ("spec_class.str.startswith('GAL')", "spec_class.str.startswith('GAL')", [1, 2]),
        # keyword arguments of a call keep their "=", ADQL's IN / NOT IN read as pandas' in / not in
        ("spec_class.str.startswith('G', na=False)", "spec_class.str.startswith('G', na=False)", [1, 2]),
        (
            "spec_class.str.contains('gal', case=False) AND r = 20.5",
            "spec_class.str.contains('gal', case=False) and r == 20.5",
            [1],
        ),
        ("spec_class NOT IN ('STAR', 'QSO')", "spec_class not in ('STAR', 'QSO')", [1, 2]),
        # a backtick-quoted column name (even one holding an apostrophe) is a name, not text
        ("`o'k` = 1 and spec_class <> 'A = B'", "`o'k` == 1 and spec_class != 'A = B'", [0, 1, 2]),
        ("r < 19.5 OR\r\nr > 21", "r < 19.5 or r > 21", [0, 2, 3]),
        # a job spec's multi-line filter: every line read the same way
        (
            "r < 21 and (good = 1 or\n spec_class = 'QSO')",
            "r < 21 and (good == 1 or  spec_class == 'QSO')",
            [0, 1, 3],
        ),
    ],
)
def test_adql_spellings_select_the_rows_pandas_would(typed, pandas, kept):
    assert normalise_where(typed) == pandas and normalise_where(pandas) == pandas
    check_where(ROWS, pandas)
    assert ROWS.query(pandas).index.tolist() == kept


@pytest.mark.parametrize("blank", [None, "", "   "])
def test_no_filter(blank):
    assert normalise_where(blank) is None


@pytest.mark.parametrize(
    ("where", "says"),
    [
        ("spec_class == GALAXY", ["'GALAXY' is not defined", "spec_class", "quotes"]),
        (
            "nosuch > 1",
            ["'nosuch' is not defined", "a column (good, o'k, r, spec_class)", "where= in Python"],
        ),
        ("r < 21 && r > 18", ["is not a pandas query", "and / or / not"]),
        ("spec_class > 1", ["does not apply to these columns", "a condition such as"]),
        ("r + 1", ["is not a condition", "true or false for each row"]),
        ("r", ["is not a condition"]),
    ],
)
def test_a_filter_that_cannot_select_rows_says_why(where, says):
    with pytest.raises(RowFilterError) as err:
        check_where(ROWS, normalise_where(where))
    for text in says:
        assert text in str(err.value)


def test_every_door_reads_the_adql_spelling():
    """The train, evaluate and cluster declarations (CLI, job spec, Python API) and the Python
    TrainOptions read the same filter the same way."""
    typed, pandas = "obj_class = 'STAR' AND parallax > 1", "obj_class == 'STAR' and parallax > 1"
    common = {"catalog": "cat", "where": typed}
    train = build(
        TrainArguments, {**common, "task": "photoz", "features": "r", "target": "z", "model_out": "m"}
    )
    evaluate = build(EvaluateArguments, {**common, "model": "m"})
    cluster = build(ClusterArguments, {**common, "features": "pmra", "out": "o"})
    assert train.where == evaluate.where == cluster.where == pandas
    assert TrainOptions("photoz", ["r"], target="z", where=typed).where == pandas
