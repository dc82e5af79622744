"""Sky plots of a catalog in Mollweide (matplotlib, imported on first use): its partitions
coloured by order or row density, and its row density per HEALPix pixel at a chosen order.

RA grows to the left (as on the sky) with RA 0 in the middle. Each plot returns a matplotlib
``Figure`` built without pyplot, so nothing global changes and a notebook shows it once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from survey_engine.catalog import layout
from survey_engine.catalog.healpix import SPATIAL_INDEX_ORDER
from survey_engine.errors import SurveyEngineError

SKY_DEG2 = 4 * np.pi * (180 / np.pi) ** 2
MAX_RASTER_WIDTH = 1440


class PlotError(SurveyEngineError, ValueError):
    """A plot that cannot be drawn with the given arguments."""


def pixel_area_deg2(order: int | np.ndarray) -> np.ndarray:
    return SKY_DEG2 / (12 * 4.0 ** np.asarray(order, dtype=np.float64))


# --- axes ------------------------------------------------------------------------------------


def sky_axes(ax=None, title: str | None = None):
    """A Mollweide axes (a new Figure unless ``ax`` is given) with RA labels growing leftward."""
    if ax is None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(10, 5.6), layout="constrained")
        ax = fig.add_subplot(projection="mollweide")
    elif getattr(ax, "name", "") != "mollweide":
        raise PlotError("ax must be a Mollweide axes (fig.add_subplot(projection='mollweide'))")
    ras = np.arange(-150, 151, 30)
    ax.set_xticks(np.radians(-ras))
    ax.set_xticklabels([f"{r % 360:d}\N{DEGREE SIGN}" for r in ras], fontsize=8)
    ax.set_xlabel("RA")
    ax.set_ylabel("Dec")
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    return ax.figure, ax


def plot_x(ra_deg: np.ndarray) -> np.ndarray:
    """RA (deg) -> the axes' longitude (radians): RA 0 in the middle, growing to the left."""
    return -np.radians((np.asarray(ra_deg, dtype=np.float64) + 180.0) % 360.0 - 180.0)


def pixel_polygons(orders: np.ndarray, pixels: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Outlines of HEALPix pixels in axes coordinates, and for each outline the pixel it draws.

    A pixel cut by the RA 180 edge of the map is drawn twice, once on each side (the ellipse
    clips what lies outside)."""
    import cdshealpix.nested as nested

    polygons, owner = [], []
    orders = np.asarray(orders, dtype=np.int64)
    pixels = np.asarray(pixels, dtype=np.int64)
    for order in np.unique(orders):
        where = np.flatnonzero(orders == order)
        step = int(max(1, 2 ** max(0, 4 - int(order))))  # smooth edges for big pixels
        lon, lat = nested.vertices(pixels[where], int(order), step=step)
        xs, ys = plot_x(lon.deg), np.radians(lat.deg)
        for i, x, y in zip(where, xs, ys):
            if x.max() - x.min() > np.pi:
                for shifted in (np.where(x < 0, x + 2 * np.pi, x), np.where(x > 0, x - 2 * np.pi, x)):
                    polygons.append(np.column_stack([shifted, y]))
                    owner.append(i)
            else:
                polygons.append(np.column_stack([x, y]))
                owner.append(i)
    return polygons, np.asarray(owner, dtype=np.int64)


# --- partitions ------------------------------------------------------------------------------


def plot_pixels(catalog, color_by: str = "order", ax=None, cmap: str | None = None, title: str | None = None):
    """The catalog's partitions on the sky, coloured by HEALPix order or by rows per square degree."""
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import BoundaryNorm, LogNorm

    if color_by not in ("order", "density"):
        raise PlotError(f"color_by must be 'order' or 'density', got {color_by!r}")
    fig, ax = sky_axes(ax, title or f"{catalog.name}: {catalog.npartitions} partitions")
    orders = catalog.partitions.Norder.to_numpy(np.int64)
    pixels = catalog.partitions.Npix.to_numpy(np.int64)
    if len(orders) == 0:
        return fig
    polygons, owner = pixel_polygons(orders, pixels)
    if color_by == "order":
        levels = np.arange(orders.min(), orders.max() + 2) - 0.5
        import matplotlib

        colormap = matplotlib.colormaps[cmap or "viridis"].resampled(len(levels) - 1)
        values, norm, label = orders[owner].astype(float), BoundaryNorm(levels, colormap.N), "HEALPix order"
    else:
        colormap = cmap or "viridis"
        density = np.asarray(catalog.partition_rows(), dtype=np.float64) / pixel_area_deg2(orders)
        values = np.ma.masked_less_equal(density[owner], 0)
        positive = density[density > 0]
        norm = LogNorm(positive.min(), max(positive.max(), positive.min() * 1.01)) if len(positive) else None
        label = "rows per deg\N{SUPERSCRIPT TWO} (stored)"
    coll = PolyCollection(polygons, array=values, cmap=colormap, norm=norm, edgecolors="0.25", linewidths=0.5)
    ax.add_collection(coll)
    bar = fig.colorbar(coll, ax=ax, orientation="horizontal", shrink=0.6, pad=0.08, label=label)
    if color_by == "order":
        bar.set_ticks(np.arange(orders.min(), orders.max() + 1))
    return fig


# --- density ---------------------------------------------------------------------------------


def pixel_counts(catalog, order: int) -> pd.Series:
    """Rows per HEALPix pixel (nested) at ``order``, indexed by pixel, only occupied pixels.

    From the point map when the catalog is whole and unfiltered and the map is fine enough;
    otherwise counted from the rows' ``_healpix_29`` (on the current Dask client if any)."""
    order = int(order)
    if not 0 <= order <= SPATIAL_INDEX_ORDER:
        raise PlotError(f"order must be within 0..{SPATIAL_INDEX_ORDER}, got {order}")
    whole = len(catalog.partitions) == len(layout.read_partition_info(catalog.path))
    if whole and not catalog.filtered:
        stored = _point_map(catalog.path)
        if stored is not None and stored[0] >= order:
            map_order, pix, counts = stored
            coarse = pix >> (2 * (map_order - order))
            series = pd.Series(counts, index=coarse).groupby(level=0).sum()
            return series[series > 0].rename_axis("pixel").rename("rows")
    shift = 2 * (SPATIAL_INDEX_ORDER - order)
    parts = catalog.to_dask().map_partitions(
        _counts_by_pixel, shift, meta=pd.Series([], dtype=np.int64, name="rows")
    )
    from survey_engine.runtime import compute_frame

    counts = compute_frame(parts.to_frame())["rows"]
    return counts.groupby(level=0).sum().astype(np.int64).rename_axis("pixel").rename("rows").sort_index()


def _counts_by_pixel(frame: pd.DataFrame, shift: int) -> pd.Series:
    pix = np.asarray(frame.index, dtype=np.int64) >> shift
    values, counts = np.unique(pix, return_counts=True)
    return pd.Series(counts.astype(np.int64), index=values, name="rows")


def _point_map(path: Path) -> tuple[int, np.ndarray, np.ndarray] | None:
    """(order, occupied pixels, counts) of a catalog's point map, or None without one."""
    from astropy.io import fits

    file = Path(path) / layout.POINT_MAP_FILE
    if not file.exists():
        return None
    with fits.open(file) as hdul:
        header = hdul[1].header
        if str(header.get("INDXSCHM", "")).upper() == "EXPLICIT":
            data = hdul[1].data
            order = int(np.log2(int(header["NSIDE"])))
            return order, np.asarray(data["PIXEL"], np.int64), np.asarray(data["VALUE"], np.int64)
    dense = layout.read_point_map(path)
    order = int(round(np.log(len(dense) / 12) / np.log(4)))
    pix = np.flatnonzero(dense)
    return order, pix.astype(np.int64), np.asarray(dense[pix], np.int64)


def default_density_order(catalog) -> int:
    """Fine enough to show structure, coarse enough that pixels hold rows: about 20 rows per
    occupied pixel, between orders 3 and 8."""
    rows = int(catalog.properties.get("hats_nrows", 0)) or 1
    sky = max(float(catalog.properties.get("moc_sky_fraction", 1.0) or 1.0), 1e-6)
    order = int(np.floor(np.log(max(rows / 20 / sky / 12, 1)) / np.log(4)))
    return int(np.clip(order, 3, 8))


def plot_density(
    catalog,
    order: int | None = None,
    ax=None,
    cmap: str = "viridis",
    log: bool = True,
    title: str | None = None,
):
    """Rows per square degree in each HEALPix pixel at ``order`` (default: see
    ``default_density_order``), drawn as a raster a few cells per pixel wide."""
    import cdshealpix.nested as nested
    from astropy.coordinates import Latitude, Longitude
    from matplotlib.colors import LogNorm, Normalize

    order = default_density_order(catalog) if order is None else int(order)
    counts = pixel_counts(catalog, order)
    density = counts.to_numpy(np.float64) / float(pixel_area_deg2(order))
    fig, ax = sky_axes(ax, title or f"{catalog.name}: rows per deg\N{SUPERSCRIPT TWO}, HEALPix order {order}")
    width = int(np.clip(16 * 2**order, 720, MAX_RASTER_WIDTH))
    x_edges = np.linspace(-np.pi, np.pi, width + 1)
    y_edges = np.linspace(-np.pi / 2, np.pi / 2, width // 2 + 1)
    xc, yc = np.meshgrid((x_edges[:-1] + x_edges[1:]) / 2, (y_edges[:-1] + y_edges[1:]) / 2)
    ra = np.degrees(-xc.ravel()) % 360.0
    cells = nested.lonlat_to_healpix(Longitude(ra, "deg"), Latitude(np.degrees(yc.ravel()), "deg"), order)
    pix = counts.index.to_numpy(np.int64)
    at = np.clip(np.searchsorted(pix, cells), 0, max(len(pix) - 1, 0))
    hit = (pix[at] == cells) if len(pix) else np.zeros(len(cells), dtype=bool)
    values = np.ma.masked_array(np.where(hit, density[at] if len(pix) else 0.0, 0.0), mask=~hit).reshape(
        xc.shape
    )
    if hit.any():
        lo, hi = float(values.min()), float(values.max())
        norm = LogNorm(lo, max(hi, lo * 1.01)) if log else Normalize(0, hi)
    else:
        norm = None
    mesh = ax.pcolormesh(x_edges, y_edges, values, cmap=cmap, norm=norm, shading="flat", rasterized=True)
    fig.colorbar(
        mesh,
        ax=ax,
        orientation="horizontal",
        shrink=0.6,
        pad=0.08,
        label=f"rows per deg\N{SUPERSCRIPT TWO} ({len(counts):,} occupied pixels, {int(counts.sum()):,} rows)",
    )
    return fig


def png_html(fig, dpi: int = 110, alt: str = "") -> str:
    """A matplotlib figure as a self-contained ``<img>`` (PNG, base64), closed after; the one way every
    report (model, job, benchmark) embeds a plot."""
    import base64
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    alt_text = f" alt='{alt}'" if alt else ""
    return f"<img src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'{alt_text}/>"
