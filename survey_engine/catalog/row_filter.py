"""Row filters (``--where``): a pandas query, also accepted in the spelling astronomers type into
ADQL (``=``, ``<>``, ``AND`` / ``OR`` / ``NOT``), checked once on a sample of the columns so that a
filter that cannot select rows stops with a message naming what is wrong, before any task runs.

    normalise_where("spec_class = 'GALAXY' AND r < 21")  ->  "spec_class == 'GALAXY' and r < 21"
"""

from __future__ import annotations

import io
import tokenize

import pandas as pd

from survey_engine.errors import SurveyEngineError

WHERE_HELP = (
    "pandas query selecting {}, e.g. \"spec_class == 'GALAXY' and r < 21\" (ADQL's =, <> and "
    "AND / OR / NOT are read as ==, != and and / or / not)"
)
ADQL_WORDS = {"AND": "and", "OR": "or", "NOT": "not"}  # any case; a pandas query wants them lower-case


class RowFilterError(SurveyEngineError, ValueError):
    """A ``--where`` that is not a condition on the rows' columns; the message says why."""


def normalise_where(where: str | None) -> str | None:
    """``where`` as pandas' query reads it: ``=`` -> ``==``, ``<>`` -> ``!=``, ``AND`` / ``OR`` /
    ``NOT`` in any case -> lower case, line breaks -> spaces; text in quotes and everything else
    unchanged. None or blank -> None (no filter)."""
    if where is None or not str(where).strip():
        return None
    where = str(where).strip()
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(where).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return where  # left for check_where to report as pandas sees it
    lines = where.splitlines(keepends=True)
    line_starts = [0]
    for line in lines:
        line_starts.append(line_starts[-1] + len(line))

    def offset(position: tuple[int, int]) -> int:  # tokenize's (line from 1, column) -> index into where
        return line_starts[position[0] - 1] + position[1]

    edits: list[tuple[int, int, str]] = []  # (start, end, replacement) as offsets into ``where``
    for i, tok in enumerate(tokens):
        start, end = offset(tok.start), offset(tok.end)
        following = tokens[i + 1] if i + 1 < len(tokens) else None
        if tok.type == tokenize.NAME and tok.string.upper() in ADQL_WORDS:
            edits.append((start, end, ADQL_WORDS[tok.string.upper()]))
        elif tok.type == tokenize.OP and tok.string == "=":
            edits.append((start, end, "=="))
        elif tok.string == "<" and following is not None and following.string == ">":
            if following.start == tok.end:  # "<>" (Python 3 reads it as two operators)
                edits.append((start, offset(following.end), "!="))
    for start, end, text in sorted(edits, reverse=True):
        where = where[:start] + text + where[end:]
    return " ".join(where.split("\n")).replace(
        "\r", ""
    )  # pandas reads one line (a job spec's `|` gives more)


def check_where(sample: pd.DataFrame, where: str) -> None:
    """Raise ``RowFilterError`` unless ``where`` selects rows of a frame with ``sample``'s columns
    (one true / false per row). ``sample``: rows with the real columns and types (dask's
    ``_meta_nonempty`` will do)."""
    try:
        selected = sample.eval(where)
    except pd.errors.UndefinedVariableError as exc:
        raise RowFilterError(
            f"--where {where!r}: {exc}; columns are {sorted(map(str, sample.columns))} "
            "(text values need quotes, e.g. spec_class == 'GALAXY')"
        ) from None
    except SyntaxError as exc:
        raise RowFilterError(
            f"--where {where!r} is not a pandas query ({exc.msg}): write a condition such as "
            "\"spec_class == 'GALAXY' and r < 21\" (and / or / not, == != < <= > >=, text in quotes)"
        ) from None
    except Exception as exc:
        raise RowFilterError(f"--where {where!r} does not apply to these columns: {exc}") from None
    if not isinstance(selected, pd.Series) or not pd.api.types.is_bool_dtype(selected.dtype):
        raise RowFilterError(
            f"--where {where!r} is not a condition: it must give true or false for each row "
            "(e.g. r < 21), not a value"
        )
