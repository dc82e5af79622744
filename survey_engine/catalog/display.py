"""What a catalog looks like in a terminal and a notebook: name, rows, columns (type, unit,
description), partitions by order and margin, from metadata only (no partition data is read)."""

from __future__ import annotations

import html
from collections import Counter
from dataclasses import dataclass

import pyarrow as pa

from survey_engine.catalog import layout

MAX_COLUMNS_SHOWN = 60


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type: str
    unit: str
    description: str
    ucd: str


def field_metadata(field: pa.Field) -> dict[str, str]:
    """A field's unit / ucd / description, as the import stores them (Arrow field metadata)."""
    meta = field.metadata or {}
    return {
        k.decode(): v.decode(errors="replace")
        for k, v in meta.items()
        if k in (b"unit", b"ucd", b"description")
    }


def column_infos(catalog) -> list[ColumnInfo]:
    """The catalog's columns as they come out of ``compute()``, with what the files say about them."""
    fields = {f.name: f for f in catalog.schema}
    types = {c: str(t) for c, t in catalog.meta.dtypes.items()} if catalog.meta is not None else {}
    out = []
    for name in catalog.column_names():
        field = fields.get(name)
        meta = field_metadata(field) if field is not None else {}
        type_name = types.get(name) or (str(field.type) if field is not None else "?")
        description = " ".join(meta.get("description", "").split())  # one line, even where the file wraps it
        out.append(ColumnInfo(name, type_name, meta.get("unit", ""), description, meta.get("ucd", "")))
    return out


def partitions_by_order(catalog) -> dict[int, int]:
    return dict(sorted(Counter(int(o) for o in catalog.partitions.Norder).items()))


def rows_text(catalog) -> str:
    """Rows from metadata; after a row filter only an upper bound is known without computing."""
    whole = len(catalog.partitions) == len(layout.read_partition_info(catalog.path))
    if not catalog.filtered:
        return f"{catalog.row_count():,} rows"
    stored = (
        int(catalog.properties["hats_nrows"])
        if whole and "hats_nrows" in catalog.properties
        else sum(catalog.partition_rows())
    )
    return f"at most {stored:,} rows (filtered; len(catalog.compute()) counts them)"


def margin_text(catalog) -> str:
    if catalog.margin is None:
        return "no margin"
    margin = catalog.margin
    rows = f", {margin.row_count():,} rows" if not margin.filtered else ""
    return f"margin {catalog.margin_radius_arcsec:g} arcsec ({margin.name}{rows})"


def orders_text(catalog) -> str:
    by_order = partitions_by_order(catalog)
    return ", ".join(f"order {o}: {n}" for o, n in by_order.items()) or "none"


def text(catalog) -> str:
    """The plain-text description (``repr``)."""
    cols = column_infos(catalog)
    lines = [
        f"Catalog {catalog.name!r}: {rows_text(catalog)} in {catalog.npartitions} partitions ({orders_text(catalog)}); "
        f"{margin_text(catalog)}",
        f"  path: {catalog.path}",
        f"  columns ({len(cols)}):",
    ]
    width = max((len(c.name) for c in cols[:MAX_COLUMNS_SHOWN]), default=0)
    type_width = max((len(c.type) for c in cols[:MAX_COLUMNS_SHOWN]), default=0)
    for c in cols[:MAX_COLUMNS_SHOWN]:
        description = (
            c.description if len(c.description) <= 70 else c.description[:69] + "\N{HORIZONTAL ELLIPSIS}"
        )
        extra = "  ".join(x for x in (f"[{c.unit}]" if c.unit else "", description) if x)
        lines.append(f"    {c.name:<{width}}  {c.type:<{type_width}}  {extra}".rstrip())
    if len(cols) > MAX_COLUMNS_SHOWN:
        lines.append(f"    ... {len(cols) - MAX_COLUMNS_SHOWN} more (catalog.column_names())")
    return "\n".join(lines)


def to_html(catalog) -> str:
    """The notebook description (``_repr_html_``): a header and a table of the columns."""
    esc = html.escape
    cols = column_infos(catalog)
    rows = "".join(
        f"<tr><td><code>{esc(c.name)}</code></td><td>{esc(c.type)}</td><td>{esc(c.unit)}</td>"
        f"<td>{esc(c.description)}</td><td>{esc(c.ucd)}</td></tr>"
        for c in cols[:MAX_COLUMNS_SHOWN]
    )
    more = f"<p>... {len(cols) - MAX_COLUMNS_SHOWN} more columns</p>" if len(cols) > MAX_COLUMNS_SHOWN else ""
    by_order = "".join(f"<tr><td>{o}</td><td>{n}</td></tr>" for o, n in partitions_by_order(catalog).items())
    return (
        f"<div class='survey-engine-catalog'><b>Catalog {esc(catalog.name)}</b>: {esc(rows_text(catalog))} "
        f"in {catalog.npartitions} partitions; {esc(margin_text(catalog))}<br><small>{esc(str(catalog.path))}</small>"
        f"<details><summary>partitions by order</summary><table><tr><th>order</th><th>partitions</th></tr>{by_order}</table></details>"
        f"<table><tr><th>column</th><th>type</th><th>unit</th><th>description</th><th>UCD</th></tr>{rows}</table>{more}</div>"
    )
