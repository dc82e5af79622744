"""Pages: disjoint pieces of one ADQL request, each small enough for the service's row limit.

A page is a contiguous range of nested HEALPix pixels at one order (by ``ivo_healpix_index`` on
the server, by a circle plus an exact client-side pixel test, or by Gaia-style id ranges), the
catch-all id page outside the pixel-encoded range, or one step of keyset paging. Pages of one plan
never overlap, and a page that overflows is replaced by four pages that tile it at the next order,
so every row is fetched exactly once however the plan adapts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from survey_engine.ingest.tap.arguments import GAIA_ID_ORDER, GAIA_ID_SHIFT


@dataclass(frozen=True)
class Page:
    kind: str  # healpix | contains | id | id-rest | keyset
    order: int = 0
    lo: int = 0  # first pixel, inclusive
    hi: int = 0  # last pixel, inclusive
    after: int | None = None  # keyset: ids strictly greater than this (None: from the start)
    number: int = 0  # keyset: the page's position in the sequence

    @property
    def key(self) -> str:
        if self.kind == "keyset":
            return f"keyset-{self.number:07d}"
        if self.kind == "id-rest":
            return "id-rest"
        return f"{self.kind}-o{self.order:02d}-{self.lo}-{self.hi}"

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_json(d: dict) -> "Page":
        return Page(**d)

    def children(self) -> list["Page"]:
        """Four pages tiling this one at the next order (a single pixel: its four children)."""
        if self.kind not in ("healpix", "contains", "id"):
            raise ValueError(f"page {self.key} cannot be split")
        lo, n = self.lo * 4, (self.hi - self.lo + 1) * 4
        step = n // 4
        return [Page(self.kind, self.order + 1, lo + i * step, lo + (i + 1) * step - 1) for i in range(4)]

    def can_split(self, max_order: int) -> bool:
        if self.kind in ("healpix", "contains"):
            return self.order < max_order
        if self.kind == "id":
            return self.order < GAIA_ID_ORDER
        return False


def healpix_expr(order: int, ra: str, dec: str) -> str:
    return f"ivo_healpix_index({int(order)}, {ra}, {dec})"


def predicate(page: Page, ra: str, dec: str, id_column: str | None) -> str:
    """The ADQL condition selecting exactly the rows of ``page`` (before any client-side test)."""
    if page.kind == "healpix":
        expr = healpix_expr(page.order, ra, dec)
        return f"{expr} = {page.lo}" if page.lo == page.hi else f"{expr} BETWEEN {page.lo} AND {page.hi}"
    if page.kind == "id":
        width = 1 << (GAIA_ID_SHIFT + 2 * (GAIA_ID_ORDER - page.order))
        return f"{id_column} BETWEEN {page.lo * width} AND {(page.hi + 1) * width - 1}"
    if page.kind == "id-rest":
        return f"({id_column} < 0 OR {id_column} > {12 * (1 << (2 * GAIA_ID_ORDER + GAIA_ID_SHIFT)) - 1})"
    if page.kind == "contains":
        ra0, dec0, radius = enclosing_circle(page.order, page.lo, page.hi)
        return f"1 = CONTAINS(POINT('ICRS', {ra}, {dec}), CIRCLE('ICRS', {ra0!r}, {dec0!r}, {radius!r}))"
    if page.kind == "keyset":
        return None if page.after is None else f"{id_column} > {page.after}"
    raise ValueError(page.kind)


def enclosing_circle(order: int, lo: int, hi: int) -> tuple[float, float, float]:
    """A circle (deg) that contains every pixel in [lo, hi] at ``order``, with a safety pad."""
    import cdshealpix
    from astropy import units as u

    pixels = np.arange(lo, hi + 1, dtype=np.uint64)
    lon, lat = cdshealpix.nested.vertices(pixels, order, step=4)
    lon, lat = np.radians(lon.to_value(u.deg).ravel()), np.radians(lat.to_value(u.deg).ravel())
    xyz = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)
    centre = xyz.mean(axis=0)
    centre /= np.linalg.norm(centre)
    radius = np.degrees(np.arccos(np.clip(xyz @ centre, -1, 1)).max())
    ra0 = float(np.degrees(np.arctan2(centre[1], centre[0])) % 360.0)
    dec0 = float(np.degrees(np.arcsin(centre[2])))
    return ra0, dec0, float(min(180.0, radius * 1.01 + 1e-4))


def in_page(page: Page, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Client-side exact test for ``contains`` pages: which rows fall in the page's pixels."""
    import cdshealpix
    from astropy import units as u

    if len(ra) == 0:
        return np.zeros(0, dtype=bool)
    pix = cdshealpix.nested.lonlat_to_healpix(
        np.asarray(ra, float) % 360.0 * u.deg, np.asarray(dec, float) * u.deg, page.order
    )
    pix = pix.astype(np.int64)
    return (pix >= page.lo) & (pix <= page.hi)


def ranges_from_counts(
    order: int, lo: int, hi: int, counts: dict[int, int], page_rows: int
) -> tuple[list[Page], list[tuple[int, int]]]:
    """Cut pixels [lo, hi] at ``order`` into contiguous pages holding at most ``page_rows`` rows
    by the server's counts. Pixels that alone hold more come back separately as (pixel, count)."""
    pages: list[Page] = []
    dense: list[tuple[int, int]] = []
    start, total = lo, 0
    for pix in sorted(p for p in counts if lo <= p <= hi and counts[p] > 0):
        n = counts[pix]
        if n > page_rows:
            if start <= pix - 1:
                pages.append(Page("healpix", order, start, pix - 1))
            dense.append((pix, n))
            start, total = pix + 1, 0
            continue
        if total + n > page_rows:
            pages.append(Page("healpix", order, start, pix - 1))
            start, total = pix, 0
        total += n
    if start <= hi:
        pages.append(Page("healpix", order, start, hi))
    return pages, dense


def deeper_order(order: int, count: int, page_rows: int, max_order: int) -> int:
    """The order at which a pixel holding ``count`` rows should split into pages of ``page_rows``."""
    return min(max_order, order + max(1, math.ceil(math.log(max(count, 1) / page_rows, 4)) + 1))


def initial_pixel_pages(kind: str, order: int) -> list[Page]:
    """Whole-sky pages without counts: each pixel at ``order`` (``id`` adds the catch-all page)."""
    pages = [Page(kind, order, p, p) for p in range(12 * 4**order)]
    if kind == "id":
        pages.append(Page("id-rest"))
    return pages
