"""Row filters (``--where``): a pandas query, also accepted in the spelling astronomers type into
ADQL (``=``, ``<>``, ``AND`` / ``OR`` / ``NOT`` / ``IN``), checked once on a sample of the columns so that a
filter that cannot select rows stops with a message naming what is wrong, before any task runs.

    normalise_where("spec_class = 'GALAXY' AND r < 21")  ->  "spec_class == 'GALAXY' and r < 21"
"""

from __future__ import annotations

import pandas as pd

from survey_engine.errors import SurveyEngineError, option

WHERE_HELP = (
    "pandas query selecting {}, e.g. \"spec_class == 'GALAXY' and r < 21\" (ADQL's =, <> and "
    "AND / OR / NOT / IN are read as ==, != and and / or / not / in)"
)
ADQL_WORDS = {w: w.lower() for w in ("AND", "OR", "NOT", "IN")}  # any case; pandas wants lower case
OPERATOR_CHARS = "=<>!"


class RowFilterError(SurveyEngineError, ValueError):
    """A ``--where`` that is not a condition on the rows' columns; the message says why."""


def normalise_where(where: str | None) -> str | None:
    """``where`` as pandas' query reads it: ``=`` -> ``==`` (but not a keyword argument inside a
    call, e.g. ``str.contains('a', case=False)``), ``<>`` -> ``!=``, ``AND`` / ``OR`` / ``NOT`` /
    ``IN`` in any case -> lower case, line breaks -> spaces. Text in quotes, backtick-quoted column
    names and ``@`` variables are left as written; a bare column named ``AND`` (or ``Or``, ...) must
    be written in backticks. Applying it twice gives the same. None or blank -> None (no filter)."""
    if where is None or not str(where).strip():
        return None
    where, out, i = str(where).strip(), [], 0
    calls: list[bool] = []  # per open bracket: True for a call's parentheses (keyword arguments inside)
    before = ""  # what came last outside quotes: "name", "keyword", "close", "dot" or "" (else)
    while i < len(where):
        c = where[i]
        if c in "'\"`":  # a quoted text or column name, copied as written
            j = _after_quoted(where, i)
            out.append(where[i:j])
            i, before = j, "name" if c == "`" else ""
        elif c.isalpha() or c in "_@":
            j = i + 1
            while j < len(where) and (where[j].isalnum() or where[j] == "_"):
                j += 1
            word = where[i:j]
            if c != "@" and before != "dot" and word.upper() in ADQL_WORDS:
                word, before = ADQL_WORDS[word.upper()], "keyword"
            else:
                before = "name"
            out.append(word)
            i = j
        elif c in "([":
            calls.append(c == "(" and before in ("name", "close"))
            out.append(c)
            i, before = i + 1, ""
        elif c in ")]":
            if calls:
                calls.pop()
            out.append(c)
            i, before = i + 1, "close"
        elif c in OPERATOR_CHARS:
            j = i
            while j < len(where) and where[j] in OPERATOR_CHARS:
                j += 1
            op = where[i:j]
            if op == "<>" or (op == "=" and not (calls and calls[-1])):
                op = "!=" if op == "<>" else "=="
            out.append(op)
            i, before = j, ""
        elif c in "\r\n" or (c == "\\" and where[i + 1 : i + 2] in ("\n", "\r")):  # line breaks,
            j = i + 1  # a backslash continuation
            while j < len(where) and where[j] in "\r\n":
                j += 1
            out.append(" ")
            i = j
        else:
            out.append(c)
            before = "dot" if c == "." else (before if c.isspace() else "")
            i += 1
    return "".join(out)


def _after_quoted(text: str, start: int) -> int:
    """The index after the quoted text opening at ``start`` (backslash escapes inside '...' and
    "...", none inside `...`), or the end of ``text`` when it is not closed (pandas reports that)."""
    quote, i = text[start], start + 1
    while i < len(text):
        if text[i] == "\\" and quote != "`":
            i += 2
            continue
        if text[i] == quote:
            return i + 1
        i += 1
    return len(text)


def check_where(sample: pd.DataFrame, where: str) -> None:
    """Raise ``RowFilterError`` unless ``where`` selects rows of a frame with ``sample``'s columns
    (one true / false per row). ``sample``: rows with the real columns and types (dask's
    ``_meta_nonempty`` will do)."""
    flag = option("--where", "where=")
    example = "\"spec_class == 'GALAXY' and r < 21\""
    try:
        selected = sample.eval(where)
    except pd.errors.UndefinedVariableError as exc:
        columns = sorted(map(str, sample.columns))
        shown = ", ".join(columns[:30]) + (f", ... ({len(columns)} in all)" if len(columns) > 30 else "")
        raise RowFilterError(
            f"{flag} {where!r}: {exc}: a name must be a column ({shown}) and text must be in quotes, "
            f"e.g. {example}"
        ) from None
    except SyntaxError:
        raise RowFilterError(
            f"{flag} {where!r} is not a pandas query: write a condition such as {example} (and / or / "
            "not, == != < <= > >=, text in quotes, `odd column names` in backticks)"
        ) from None
    except Exception as exc:
        raise RowFilterError(
            f"{flag} {where!r} does not apply to these columns ({exc}); write a condition such as {example}"
        ) from None
    if not isinstance(selected, pd.Series) or not pd.api.types.is_bool_dtype(selected.dtype):
        raise RowFilterError(
            f"{flag} {where!r} is not a condition: it must give true or false for each row "
            "(e.g. r < 21), not a value"
        )


def filter_rows(frame, where: str | None):
    """``frame`` (a dask DataFrame) restricted to the rows ``where`` selects, the filter read and
    checked first (``normalise_where``, ``check_where``: ``RowFilterError``); ``frame`` itself
    without one."""
    where = normalise_where(where)
    if not where:
        return frame
    check_where(frame._meta_nonempty, where)
    return frame.map_partitions(lambda df, q=where: df.query(q), meta=frame._meta)
