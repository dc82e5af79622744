"""The HATS v1.0 directory layout: paths, properties, partition info, point map, metadata.

A catalog folder holds ``hats.properties`` (and a ``properties`` copy), ``partition_info.csv``,
``point_map.fits`` / ``skymap.fits`` and ``dataset/`` with ``_metadata``, ``_common_metadata`` and
``Norder=K/Dir=D/Npix=N.parquet``. A collection folder holds ``collection.properties`` naming
its main catalog and margin catalogs, each in a subfolder. hats, hats-import and LSDB read and
write exactly this, so catalogs move freely between them and survey_engine.
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from survey_engine.catalog import storage
from survey_engine.errors import SurveyEngineError

HATS_VERSION = "v1.0"
PROPERTIES_FILE = "hats.properties"
COLLECTION_FILE = "collection.properties"
PARTITION_INFO_FILE = "partition_info.csv"
POINT_MAP_FILE = "point_map.fits"
DATASET_DIR = "dataset"


def partition_relpath(order: int, pix: int, suffix: str = ".parquet") -> str:
    """Path of one partition's file relative to ``dataset/`` (HATS: Dir = Npix // 10000 * 10000).

    ``suffix`` is the catalog's ``hats_npix_suffix``: ``.parquet`` (ours), another file suffix
    (``.parq``), or ``/`` for a partition stored as a folder ``Npix=N/`` of several files."""
    base = f"Norder={order}/Dir={(pix // 10000) * 10000}/Npix={pix}"
    return base if suffix == "/" else base + suffix


def partition_path(catalog_dir: str | Path, order: int, pix: int) -> Path:
    """A partition's file (or folder, for ``hats_npix_suffix=/``) in the catalog at ``catalog_dir``."""
    if storage.is_remote(catalog_dir):
        return _remote_partition_path(storage.as_path(catalog_dir), int(order), int(pix))
    return Path(catalog_dir) / DATASET_DIR / partition_relpath(order, pix, npix_suffix(catalog_dir))


@functools.lru_cache(maxsize=100_000)
def _remote_partition_path(catalog_dir, order: int, pix: int):
    # a UPath costs about half a millisecond to make: one join per partition, and each made once
    return catalog_dir.joinpath(f"{DATASET_DIR}/{partition_relpath(order, pix, npix_suffix(catalog_dir))}")


def read_properties(path: str | Path, text: str | None = None) -> dict[str, str]:
    """Parse a Java-style key=value properties file (comments start with #); ``text`` if already read."""
    props: dict[str, str] = {}
    try:
        text = storage.read_text(storage.as_path(path)) if text is None else text
    except UnicodeDecodeError as exc:
        raise CatalogVariantError(
            f"{path}: not a properties file (not UTF-8 text: {exc.reason} at byte {exc.start})"
        ) from None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        props[key.strip()] = value.strip()
    return props


def write_properties(path: str | Path, props: dict[str, object], header: str = "#HATS catalog") -> None:
    lines = [header] + [f"{k}={v}" for k, v in props.items() if v is not None]
    atomic_write_text(Path(path), "\n".join(lines) + "\n")


def atomic_write_text(path: Path, text: str) -> None:
    """Write a small text file so that readers see either the old or the new content."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def now_utc() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%MUTC")


def builder_string() -> str:
    from survey_engine.version import __version__

    return f"survey_engine v{__version__}"


def write_partition_info(catalog_dir: Path, orders: np.ndarray, pixels: np.ndarray) -> None:
    df = pd.DataFrame(
        {"Norder": np.asarray(orders, dtype=np.int64), "Npix": np.asarray(pixels, dtype=np.int64)}
    )
    tmp = catalog_dir / f".{PARTITION_INFO_FILE}.tmp"
    df.to_csv(tmp, index=False)
    os.replace(tmp, catalog_dir / PARTITION_INFO_FILE)


def read_partition_info(catalog_dir: str | Path) -> pd.DataFrame:
    """Partitions as a DataFrame (Norder, Npix), from partition_info.csv or else _metadata."""
    import io

    catalog_dir = storage.as_path(catalog_dir)
    info = catalog_dir / PARTITION_INFO_FILE
    text = (
        remote_text_or_none(info)
        if storage.is_remote(info)
        else (info.read_text() if info.exists() else None)
    )
    if text is not None:
        df = pd.read_csv(io.StringIO(text))
        return df[["Norder", "Npix"]].astype(np.int64)
    meta = catalog_dir / DATASET_DIR / "_metadata"
    if not storage.exists(meta):
        raise CatalogNotFoundError(
            f"{storage.display(catalog_dir)}: neither {PARTITION_INFO_FILE} nor dataset/_metadata found"
        )
    md = read_parquet_metadata(meta)
    pixels = set()
    for i in range(md.num_row_groups):
        pixels.add(pixel_from_path(md.row_group(i).column(0).file_path))
    orders, pix = zip(*sorted(pixels)) if pixels else ((), ())
    return pd.DataFrame({"Norder": np.array(orders, dtype=np.int64), "Npix": np.array(pix, dtype=np.int64)})


def pixel_from_path(path: str) -> tuple[int, int]:
    """(order, pix) from a ``.../Norder=K/Dir=D/Npix=N.parquet`` (or ``Npix=N/part.parquet``) path:
    by string cuts (10^5 metadata row groups' paths parsed as ``Path`` objects took seconds), else
    by the path's parts, which names what is missing (``KeyError``)."""
    text = str(path)
    try:
        i, j = text.rindex("Norder="), text.rindex("Npix=")
        order = text[i + 7 : text.index("/", i)]
        pix = text[j + 5 :].split("/", 1)[0].split(".", 1)[0]
        if order.isdigit() and pix.isdigit():
            return int(order), int(pix)
    except ValueError:
        pass
    parts = dict(p.split("=", 1) for p in Path(path).parts if "=" in p)
    npix = parts["Npix"].split(".")[0]
    return int(parts["Norder"]), int(npix)


def columns_with_nulls(catalog_dir: str | Path, schema: pa.Schema, partition_files=()) -> tuple[str, ...]:
    """Integer and boolean columns holding at least one null, from the row groups' statistics in
    ``dataset/_metadata`` (else each partition's footer). A column without statistics counts
    as holding nulls: the nullable dtype is always safe, a plain one is not."""
    candidates = [f.name for f in schema if pa.types.is_integer(f.type) or pa.types.is_boolean(f.type)]
    if not candidates:
        return ()
    meta_file = storage.as_path(catalog_dir) / DATASET_DIR / "_metadata"
    try:
        known = str(meta_file) in _REMOTE_METADATA or storage.exists(meta_file)
        footers = (
            [read_parquet_metadata(meta_file)]
            if known
            else [read_parquet_metadata(f) for f in partition_files]
        )
    except (OSError, pa.ArrowException):
        return tuple(candidates)
    found: set[str] = set()
    for md in footers:
        names = {md.schema.column(i).path: i for i in range(md.num_columns)}
        for rg in range(md.num_row_groups):
            group = md.row_group(rg)
            for name in candidates:
                i = names.get(name)
                if i is None or name in found:
                    continue
                stats = group.column(i).statistics
                if stats is None or not stats.has_null_count or stats.null_count > 0:
                    found.add(name)
            if len(found) == len(candidates):
                break
    return tuple(c for c in candidates if c in found)


def write_point_map(catalog_dir: Path, *, order: int, pixels: np.ndarray, counts: np.ndarray) -> None:
    """Row counts per pixel at the histogram order, as hats reads them: the HEALPix explicit
    (PIXEL, VALUE) FITS form, holding only the occupied pixels."""
    for name in (POINT_MAP_FILE, "skymap.fits"):
        tmp = catalog_dir / f".{name}.tmp"
        _write_explicit_skymap(tmp, order, pixels, counts)
        os.replace(tmp, catalog_dir / name)


def _write_explicit_skymap(path: Path, order: int, pixels: np.ndarray, counts: np.ndarray) -> None:
    from astropy.io import fits

    cols = fits.ColDefs(
        [
            fits.Column(name="PIXEL", format="K", array=np.asarray(pixels, np.int64)),
            fits.Column(name="VALUE", format="K", array=np.asarray(counts, np.int64)),
        ]
    )
    hdu = fits.BinTableHDU.from_columns(cols, name="xtension")
    for key, value in (
        ("PIXTYPE", "HEALPIX"),
        ("INDXSCHM", "EXPLICIT"),
        ("ORDERING", "NESTED"),
        ("COORDSYS", "C"),
        ("NSIDE", 2**order),
        ("OBS_NPIX", len(pixels)),
    ):
        hdu.header[key] = value
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path, overwrite=True)


def read_point_map(catalog_dir: str | Path) -> np.ndarray | None:
    from cdshealpix.skymap.skymap import Scheme, Skymap

    path = storage.as_path(catalog_dir) / POINT_MAP_FILE
    if not storage.exists(path):
        return None
    if storage.is_remote(path):  # cdshealpix reads a local file: fetch the (small) map first
        import tempfile

        with tempfile.NamedTemporaryFile(suffix=".fits") as tmp:
            tmp.write(path.fs.cat_file(path.path))
            tmp.flush()
            skymap = Skymap.from_fits(tmp.name)
    else:
        skymap = Skymap.from_fits(str(path))
    if skymap.scheme == Scheme.EXPLICIT:
        return skymap.skymap.to_implicit(null_value=0).values
    return skymap.skymap.values


def without_pandas_metadata(schema: pa.Schema) -> pa.Schema:
    """Drop the pandas index/dtype blob (stale once rows are re-partitioned); keep other metadata."""
    meta = {k: v for k, v in (schema.metadata or {}).items() if k != b"pandas"}
    return schema.with_metadata(meta) if meta else schema.remove_metadata()


def write_dataset_metadata(catalog_dir: Path, orders, pixels, schema: pa.Schema) -> int:
    """Write ``_metadata`` (all row-group footers, paths relative to dataset/) and ``_common_metadata``.

    Returns the total number of rows found in the partition files.
    """
    dataset_dir = catalog_dir / DATASET_DIR
    total = 0
    collected = []
    for order, pix in zip(orders, pixels):
        rel = partition_relpath(int(order), int(pix))
        md = pq.read_metadata(dataset_dir / rel)
        md.set_file_path(rel)
        total += md.num_rows
        collected.append(md)
    schema = without_pandas_metadata(schema)
    tmp_meta = dataset_dir / "._metadata.tmp"
    tmp_common = dataset_dir / "._common_metadata.tmp"
    pq.write_metadata(schema, tmp_common)
    if collected:
        pq.write_metadata(schema, tmp_meta, metadata_collector=collected)
    else:
        pq.write_metadata(schema, tmp_meta)
    os.replace(tmp_common, dataset_dir / "_common_metadata")
    os.replace(tmp_meta, dataset_dir / "_metadata")
    return total


def write_catalog_properties(
    catalog_dir: Path,
    *,
    name: str,
    product: str,
    nrows: int,
    ra_column: str,
    dec_column: str,
    orders: np.ndarray,
    extra: dict[str, object] | None = None,
) -> dict[str, object]:
    """Write hats.properties (and its ``properties`` twin) the way hats 0.11 expects them."""
    props: dict[str, object] = {
        "obs_collection": name,
        "dataproduct_type": product,
        "hats_nrows": int(nrows),
        "hats_col_ra": ra_column,
        "hats_col_dec": dec_column,
        "hats_col_healpix": "_healpix_29",
        "hats_col_healpix_order": 29,
        "hats_npix_suffix": ".parquet",
    }
    props.update(extra or {})
    props.update(
        {
            "hats_order": int(np.max(orders)) if len(orders) else 0,
            "moc_sky_fraction": f"{_sky_fraction(orders):.5f}",
            "hats_builder": builder_string(),
            "hats_creation_date": now_utc(),
            "hats_version": HATS_VERSION,
        }
    )
    write_properties(catalog_dir / PROPERTIES_FILE, props)
    write_properties(catalog_dir / "properties", props)
    return props


def _sky_fraction(orders) -> float:
    orders = np.asarray(orders, dtype=np.float64)
    return float(np.sum(1.0 / (12 * 4.0**orders))) if len(orders) else 0.0


def write_collection_properties(collection_dir: Path, name: str, main: str, margins: list[str]) -> None:
    props = {
        "obs_collection": name,
        "hats_primary_table_url": main,
        "all_margins": " ".join(margins) if margins else None,
        "default_margin": margins[0] if margins else None,
        "hats_builder": builder_string(),
        "hats_creation_date": now_utc(),
        "hats_version": HATS_VERSION,
    }
    write_properties(collection_dir / COLLECTION_FILE, props, header="#HATS Collection")


# --- reading the HATS variants that hats 0.11 and LSDB read ------------------------------------


class CatalogVariantError(SurveyEngineError, ValueError):
    """A HATS catalog kind or variant that cannot be opened as rows; the message names the folder."""


_SUFFIX_CACHE: dict[tuple[str, int], str] = {}
_SPATIAL_CACHE: dict[tuple[str, int], tuple[str, int, str, str] | None] = {}


def _properties_key(catalog_dir: str | Path) -> tuple[str, int] | None:
    """(catalog folder, properties mtime): the cache key of what its properties say, or None.
    A remote catalog is taken as unchanging while this process runs (no request per look-up)."""
    if storage.is_remote(catalog_dir):
        return str(catalog_dir), -1
    for name in (PROPERTIES_FILE, "properties"):
        try:
            return str(catalog_dir), (Path(catalog_dir) / name).stat().st_mtime_ns
        except OSError:
            continue
    return None


# what a remote catalog's properties say, read once per process (remote catalogs are read as unchanging)
_REMOTE_PROPERTIES: dict[str, dict[str, str]] = {}


_REMOTE_TEXT: dict[str, str] = {}


def remote_text_or_none(path) -> str | None:
    """A remote catalog's small text file (``collection.properties``, ``partition_info.csv``), or
    None where there is none; one GET the first time, none after (as its properties, a remote
    catalog is read as unchanging while this process runs; a file not found is asked again). Kept
    per location and storage options: other credentials ask the server again."""
    key = storage.access_key(path)
    if key not in _REMOTE_TEXT:
        text = storage.read_text_or_none(path)
        if text is None:
            return None
        if len(_REMOTE_TEXT) > 256:
            _REMOTE_TEXT.clear()
        _REMOTE_TEXT[key] = text
    return _REMOTE_TEXT[key]


def _properties_of(catalog_dir: str | Path) -> dict[str, str]:
    if storage.is_remote(catalog_dir) and str(catalog_dir) in _REMOTE_PROPERTIES:
        return _REMOTE_PROPERTIES[str(catalog_dir)]
    for name in (PROPERTIES_FILE, "properties"):
        path = storage.as_path(catalog_dir) / name
        if storage.is_remote(path):
            text = storage.read_text_or_none(path)
            if text is not None:
                if len(_REMOTE_PROPERTIES) > 256:
                    _REMOTE_PROPERTIES.clear()
                _REMOTE_PROPERTIES[str(catalog_dir)] = props = read_properties(path, text)
                return props
        elif path.exists():
            return read_properties(path)
    return {}


def npix_suffix(catalog_dir: str | Path) -> str:
    """The catalog's ``hats_npix_suffix`` (``.parquet`` when its properties do not say, or do not
    exist yet, as while survey_engine writes one)."""
    key = _properties_key(catalog_dir)
    if key is None:
        return ".parquet"
    if key not in _SUFFIX_CACHE:
        suffix = _properties_of(catalog_dir).get("hats_npix_suffix", ".parquet") or ".parquet"
        if suffix != "/" and not suffix.startswith("."):
            raise CatalogVariantError(
                f"{catalog_dir}: hats_npix_suffix={suffix!r} is neither '/' nor a file suffix such as '.parquet'"
            )
        _SUFFIX_CACHE[key] = suffix
    return _SUFFIX_CACHE[key]


def catalog_dir_of(partition: str | Path) -> Path | None:
    """The catalog folder holding a partition file ``.../dataset/Norder=K/...`` (None elsewhere)."""
    for parent in storage.as_path(partition).parents:
        if parent.name == DATASET_DIR:
            return parent.parent
    return None


def spatial_index_of(catalog_dir: str | Path) -> tuple[str, int, str, str] | None:
    """(column, order, ra column, dec column) of a catalog whose spatial index is not
    ``_healpix_29`` (``hats_col_healpix`` / ``hats_col_healpix_order``, e.g. ``healpix13``, 13);
    None for the usual ``_healpix_29``."""
    key = _properties_key(catalog_dir)
    if key is None:
        return None
    if key not in _SPATIAL_CACHE:
        props = _properties_of(catalog_dir)
        column = props.get("hats_col_healpix") or "_healpix_29"
        order = props.get("hats_col_healpix_order") or "29"
        if column == "_healpix_29" and order == "29":
            _SPATIAL_CACHE[key] = None
        else:
            try:
                order_int = int(order)
            except ValueError:
                order_int = -1
            if not 0 <= order_int <= 29:
                raise CatalogVariantError(
                    f"{catalog_dir}: hats_col_healpix_order={order!r} is not an order within 0..29"
                )
            _SPATIAL_CACHE[key] = (
                column,
                order_int,
                props.get("hats_col_ra", "ra"),
                props.get("hats_col_dec", "dec"),
            )
    return _SPATIAL_CACHE[key]


def partition_num_rows(path: str | Path) -> int:
    """Rows in one partition, from the Parquet footer(s): a file, or a ``Npix=N/`` folder of files."""
    path = storage.as_path(path)
    if is_partition_folder(path):
        return sum(read_parquet_metadata(f).num_rows for f in partition_folder_files(path))
    return read_parquet_metadata(path).num_rows


def partition_folder_files(path: str | Path) -> list[Path]:
    """The Parquet files of a partition stored as a folder, in name order (hidden files skipped)."""
    return sorted(
        (f for f in storage.as_path(path).iterdir() if f.is_file() and not f.name.startswith((".", "_"))),
        key=str,
    )


def read_partition_schema(path: str | Path) -> pa.Schema:
    """Arrow schema of one partition (file or folder)."""
    path = storage.as_path(path)
    if is_partition_folder(path):
        files = partition_folder_files(path)
        if not files:
            raise FileNotFoundError(f"{path}: partition folder holds no files")
        path = files[0]
    if storage.is_remote(path):  # one suffix range request for the footer
        return storage.remote_parquet_footer(path)[1].schema.to_arrow_schema()
    with storage.parquet_source(path) as source:
        return pq.read_schema(source)


def is_partition_folder(path) -> bool:
    """Whether a partition is stored as a folder of files (``Npix=N/``): asked of the file system
    locally, of the catalog's ``hats_npix_suffix`` remotely (no request)."""
    if not storage.is_remote(path):
        return Path(path).is_dir()
    catalog_dir = catalog_dir_of(path)
    return catalog_dir is not None and npix_suffix(catalog_dir) == "/"


_REMOTE_METADATA: dict[str, pq.FileMetaData] = {}


def read_parquet_metadata(path) -> pq.FileMetaData:
    """A Parquet file's footer (local or remote: only the footer's bytes are fetched). A remote
    ``_metadata`` is kept for the process, as remote catalogs are read as unchanging: opening the
    catalog and finding its nullable columns read it once; it is all footer, so it is fetched whole
    in one request (no HEAD for its size, no second read)."""
    path = storage.as_path(path)
    key = str(path) if storage.is_remote(path) and path.name == "_metadata" else None
    if key is not None and key in _REMOTE_METADATA:
        return _REMOTE_METADATA[key]
    if key is not None:
        md = pq.read_metadata(pa.BufferReader(storage.read_bytes(path)))
    elif storage.is_remote(path):  # one suffix range request, no HEAD for the size
        md = storage.remote_parquet_footer(path)[1]
    else:
        with storage.parquet_source(path) as source:
            md = pq.read_metadata(source)
    if key is not None:
        if len(_REMOTE_METADATA) > 32:
            _REMOTE_METADATA.clear()
        _REMOTE_METADATA[key] = md
    return md


class CatalogNotFoundError(SurveyEngineError, FileNotFoundError):
    """No HATS catalog or collection where one was asked for (a local folder or a remote location)."""


# --- paths are data: plain names, writes and removals that stay inside their folder -------------

_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


class UnsafePathError(SurveyEngineError, ValueError):
    """A name or path that would reach outside the folder it belongs to (names the key or flag)."""


def check_name(name: object, what: str = "name") -> str:
    """``name`` if it is a plain file name: letters, digits, ``_ - .``, not starting with ``.``
    (so never ``.``, ``..`` or one of our hidden staging names), no separators, not empty.

    Names that come from users (stage ids, ``--name``, output names) become folder names; one
    like ``../../victim`` or ``/home/me`` would otherwise write, and remove, outside the output."""
    if not isinstance(name, str) or not _PLAIN_NAME.fullmatch(name) or len(name) > 200:
        raise UnsafePathError(
            f"{what} {name!r} is not a plain name: use letters, digits, '_', '-' and '.', "
            "not starting with '.', without '/' or '..'"
        )
    return name


def safe_child(parent: str | Path, name: str, what: str = "name") -> Path:
    """``parent/name`` for a plain ``name`` (see ``check_name``), checked to resolve inside ``parent``."""
    child = Path(parent) / check_name(name, what)
    check_inside(child, parent, what)
    return child


def check_inside(path: str | Path, root: str | Path, what: str = "path") -> Path:
    """``path`` if it resolves strictly inside ``root`` (symbolic links followed), else an error."""
    path, root = Path(path), Path(root)
    real = path.parent.resolve() / path.name  # the entry itself may be a link: judge where it sits
    real_root = root.resolve()
    if path.name in ("", ".", "..") or real == real_root or real_root not in real.parents:
        raise UnsafePathError(
            f"{what} {str(path)!r} is not inside {str(root)!r}; refusing to write or remove it"
        )
    return path


def remove_tree(path: str | Path, root: str | Path) -> None:
    """``shutil.rmtree(path)`` for a folder strictly inside ``root``; a link is unlinked, never
    followed; a missing path is fine. Nothing outside ``root`` is ever removed."""
    import shutil

    path = Path(path)
    check_inside(path, root, "folder to remove")
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def output_path(out: str | Path, flag: str = "--out") -> Path:
    """An output folder given by a user, made absolute (so ``--out ..`` names the real parent and
    names derived from it are real names); the file system root is refused."""
    path = Path(os.path.abspath(out))
    if path.name in ("", ".", ".."):
        raise UnsafePathError(f"{flag} {str(out)!r} is not a folder an output can be written to")
    return path


def publish_folder(tmp: str | Path, out: str | Path, root: str | Path) -> Path:
    """Swap the finished folder ``tmp`` in as ``out``, atomically for readers: a reader sees the old
    folder or the new one, never a mix; the old one is removed only after the new one is in place.
    Both must sit inside ``root`` (checked): nothing outside it is ever replaced or removed. The one
    way every stage publishes a folder (job stages, models, predictions, imports)."""
    tmp, out = Path(tmp), Path(out)
    check_inside(tmp, root, "staging folder")
    check_inside(out, root, "output folder")
    if out.exists() or out.is_symlink():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        remove_tree(old, root)
        os.replace(out, old)
        os.replace(tmp, out)
        remove_tree(old, root)
    else:
        os.replace(tmp, out)
    return out
