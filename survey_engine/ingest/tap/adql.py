"""Safe ADQL building: identifiers are validated, user WHERE clauses cannot escape their parentheses.

A user's table and column names are checked as ADQL identifiers (regular, or delimited in double
quotes) and never spliced in raw; a WHERE clause is passed as ADQL (the service parses it) but is
first tokenised here so that it cannot close the parenthesis we put around it, end the statement
or comment out the paging predicate that follows.
"""

from __future__ import annotations

import re

from survey_engine.errors import SurveyEngineError

_REGULAR = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_DELIMITED = re.compile(r'^"[^"\x00-\x1f]+"$')
# ADQL 2.1 reserved words that cannot be regular identifiers (the SQL ones a column is likely to hit).
_RESERVED = {
    "select",
    "from",
    "where",
    "and",
    "or",
    "not",
    "order",
    "by",
    "group",
    "having",
    "top",
    "offset",
    "as",
    "in",
    "is",
    "null",
    "between",
    "like",
    "join",
    "on",
    "union",
    "distinct",
    "all",
    "case",
    "when",
    "then",
    "else",
    "end",
    "asc",
    "desc",
    "exists",
    "inner",
    "outer",
    "left",
    "right",
    "full",
    "natural",
    "using",
    "with",
    "intersect",
    "except",
    "values",
    "into",
    "table",
}


class AdqlInputError(SurveyEngineError, ValueError):
    """A user-supplied identifier or WHERE clause that is not safe or not valid ADQL."""


def identifier(name: str, what: str = "column") -> str:
    """``name`` as a validated ADQL identifier (returned unchanged), or AdqlInputError."""
    if not isinstance(name, str) or not name:
        raise AdqlInputError(f"empty {what} name")
    if _DELIMITED.match(name):
        return name
    if not _REGULAR.match(name):
        raise AdqlInputError(
            f"{what} name {name!r} is not an ADQL identifier (letters, digits and '_', starting with a letter; "
            f"or a delimited identifier in double quotes)"
        )
    if name.lower() in _RESERVED:
        raise AdqlInputError(f'{what} name {name!r} is an ADQL reserved word; write it quoted, as "{name}"')
    return name


def table_name(name: str) -> str:
    """A table name: up to three dot-separated identifiers (catalog.schema.table)."""
    parts = _split_dotted(name)
    if not 1 <= len(parts) <= 3:
        raise AdqlInputError(f"table name {name!r} must be table, schema.table or catalog.schema.table")
    return ".".join(identifier(p, "table") for p in parts)


def _split_dotted(name: str) -> list[str]:
    parts, current, quoted = [], "", False
    for ch in name:
        if ch == '"':
            quoted = not quoted
        if ch == "." and not quoted:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts


def where_clause(where: str | None) -> str | None:
    """Check a user's WHERE clause and return it ready to be ANDed in parentheses (None if empty).

    Rejected: a parenthesis that closes what it did not open, unbalanced parentheses or quotes,
    ';' (a second statement) and comments ('--', '/*') outside string literals.
    """
    if where is None or not where.strip():
        return None
    text = where.strip()
    depth, i, n = 0, 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "'":  # string literal; '' is an escaped quote
            j = i + 1
            while True:
                j = text.find("'", j)
                if j < 0:
                    raise AdqlInputError(f"WHERE clause {where!r}: unterminated string literal")
                if j + 1 < n and text[j + 1] == "'":
                    j += 2
                    continue
                break
            i = j + 1
            continue
        if ch == '"':
            j = text.find('"', i + 1)
            if j < 0:
                raise AdqlInputError(f"WHERE clause {where!r}: unterminated delimited identifier")
            i = j + 1
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise AdqlInputError(f"WHERE clause {where!r}: ')' closes a parenthesis it did not open")
        elif ch == ";":
            raise AdqlInputError(f"WHERE clause {where!r}: ';' is not allowed (one statement only)")
        elif text.startswith("--", i) or text.startswith("/*", i):
            raise AdqlInputError(f"WHERE clause {where!r}: comments are not allowed")
        elif ord(ch) < 32 and ch not in "\t\n\r":
            raise AdqlInputError(f"WHERE clause {where!r}: control character {ch!r}")
        i += 1
    if depth != 0:
        raise AdqlInputError(f"WHERE clause {where!r}: unbalanced parentheses")
    return f"({text})"


def select(
    table: str,
    columns: list[str] | None,
    predicates: list[str],
    *,
    top: int | None = None,
    order_by: str | None = None,
) -> str:
    """``SELECT [TOP n] cols FROM table WHERE p1 AND p2 ... [ORDER BY col]`` from checked parts."""
    cols = ", ".join(columns) if columns else "*"
    query = f"SELECT {'TOP %d ' % top if top else ''}{cols} FROM {table}"
    preds = [p for p in predicates if p]
    if preds:
        query += " WHERE " + " AND ".join(preds)
    if order_by:
        query += f" ORDER BY {order_by}"
    return query
