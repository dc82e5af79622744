"""Arguments of a TAP ingest, validated before any request is sent."""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from dataclasses import InitVar, asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from survey_engine.ingest.file_import.arguments import (
    DEFAULT_HIGHEST_ORDER,
    DEFAULT_MARGIN_ARCSEC,
    DEFAULT_MAX_ROWS,
)
from survey_engine.ingest.readers import InputError
from survey_engine.ingest.tap import adql
from survey_engine.ingest.tap.client import PRESETS, redact
from survey_engine.redact import split_userinfo

PAGINGS = ("auto", "healpix", "contains", "id", "keyset")
GAIA_ID_ORDER = 12  # Gaia source_id // 2**35 is the order-12 nested HEALPix pixel
GAIA_ID_SHIFT = 35


@dataclass
class TapIngestArguments:
    """Everything an ingest needs: ``table`` (+ ``columns``, ``where``) from the service at ``tap_url``
    into a HATS collection at ``out``. ``tap_url`` may also be a preset name (see client.PRESETS).

    paging: ``healpix`` (ivo_healpix_index ranges, counted first), ``contains`` (CONTAINS with a
    circle around each pixel + an exact client-side pixel test), ``id`` (Gaia-style source_id
    ranges), ``keyset`` (``id > last ORDER BY id``), or ``auto`` (healpix if the service declares
    ivo_healpix_index, else id for a preset that says so, else contains).
    """

    tap_url: str
    table: str
    out: str
    columns: list[str] | None = None
    where: str | None = None
    ra_column: str = "ra"
    dec_column: str = "dec"
    id_column: str | None = None
    order: int = 3
    max_order: int = 20
    page_rows: int = 100_000
    pages_in_flight: int = 4  # queries running at once (CLI --pages-in-flight)
    paging: str = "auto"
    mode: str = "sync"
    retries: int = 6
    backoff: float = 0.5
    min_interval: float = 0.0
    timeout: float = 300.0
    token: str | None = field(default=None, repr=False)
    max_rows: int = DEFAULT_MAX_ROWS
    highest_order: int = DEFAULT_HIGHEST_ORDER
    margin_arcsec: float | None = DEFAULT_MARGIN_ARCSEC
    name: str | None = None
    where_sql: str | None = field(default=None, init=False, repr=False)
    basic_auth: tuple[str, str] | None = field(default=None, init=False, repr=False)
    workers: InitVar[int | None] = None  # deprecated name of pages_in_flight

    def __post_init__(self, workers: int | None = None) -> None:
        if workers is not None:
            warnings.warn("TapIngestArguments(workers=N) is deprecated: pages in flight are pages_in_flight=N "
                          "(--pages-in-flight); --workers means local Dask workers", DeprecationWarning, stacklevel=3)
            self.pages_in_flight = workers
        preset = PRESETS.get(self.tap_url.lower()) if self.tap_url else None
        if preset:
            self.tap_url = preset["url"]
            if self.paging == "auto" and preset.get("paging"):
                self.paging = preset["paging"]
            if self.id_column is None and preset.get("id"):
                self.id_column = preset["id"]
        if not self.tap_url or not re.match(r"^https?://[^\s/]+", self.tap_url):
            raise InputError(f"--tap {redact(self.tap_url or '')!r}: not an http(s) URL or a known service ({', '.join(PRESETS)})")
        # user:password@ in the URL becomes HTTP basic auth, kept out of the URL (and so out of logs);
        # split by hand: a password holding '#' or '/' breaks urllib's parsing (and its error quotes it)
        bare, user, password = split_userinfo(self.tap_url)
        if user is not None or password is not None:
            self.basic_auth = (user or "", password or "")
            self.tap_url = bare
        try:
            urlsplit(self.tap_url).port
        except ValueError:
            raise InputError(f"--tap {redact(self.tap_url)!r}: the port is not a number") from None
        try:
            self.table = adql.table_name(self.table)
            if self.columns is not None:
                if not self.columns:
                    raise adql.AdqlInputError("--columns is empty")
                self.columns = [adql.identifier(c.strip()) for c in self.columns]
                if len(set(c.lower() for c in self.columns)) != len(self.columns):
                    raise adql.AdqlInputError(f"--columns names a column twice: {','.join(self.columns)}")
            self.ra_column = adql.identifier(self.ra_column, "--ra column")
            self.dec_column = adql.identifier(self.dec_column, "--dec column")
            if self.id_column is not None:
                self.id_column = adql.identifier(self.id_column, "--id column")
            self.where_sql = adql.where_clause(self.where)
        except adql.AdqlInputError as exc:
            raise InputError(str(exc)) from None
        if self.columns is not None:
            needed = [self.ra_column, self.dec_column] + ([self.id_column] if self.id_column else [])
            lower = {c.lower() for c in self.columns}
            self.columns += [c for c in needed if c.lower() not in lower]
        if self.paging not in PAGINGS:
            raise InputError(f"--paging must be one of {', '.join(PAGINGS)}, got {self.paging!r}")
        if self.paging in ("id", "keyset") and not self.id_column:
            raise InputError(f"--paging {self.paging} needs --id COLUMN")
        if self.mode not in ("sync", "async"):
            raise InputError(f"query mode must be sync or async, got {self.mode!r}")
        if not 0 <= self.order <= 12:
            raise InputError(f"--order must be within 0..12, got {self.order}")
        if self.paging == "id" and self.order > GAIA_ID_ORDER:
            raise InputError(f"--paging id splits Gaia-style ids down to order {GAIA_ID_ORDER}; --order {self.order} is deeper")
        if not self.order <= self.max_order <= 29:
            raise InputError(f"--max-order must be within --order..29, got {self.max_order}")
        if self.page_rows < 1:
            raise InputError(f"--page-rows must be positive, got {self.page_rows}")
        if self.pages_in_flight < 1:
            raise InputError(f"--pages-in-flight must be at least 1, got {self.pages_in_flight}")
        if self.retries < 0 or self.backoff < 0 or self.min_interval < 0 or self.timeout <= 0:
            raise InputError("--retries, backoff and --min-interval must be >= 0 and the timeout > 0")
        self.out = str(Path(self.out))
        from survey_engine.catalog.layout import check_name, output_path

        self.name = check_name(self.name, "--name (the catalog name)") if self.name is not None else output_path(self.out).name

    @property
    def pages_dir(self) -> Path:
        return Path(self.out + ".pages")

    def describe_source(self) -> dict:
        """What was asked of which service: safe to log and store (no credentials)."""
        return {"service": redact(self.tap_url), "table": self.table, "columns": self.columns, "where": self.where,
                "ra": self.ra_column, "dec": self.dec_column, "id": self.id_column}

    def fingerprint(self) -> str:
        """Hash of the request and of everything that shapes the pages and the catalog."""
        from survey_engine import __version__

        skip = {"token", "basic_auth", "pages_in_flight", "mode", "retries", "backoff", "min_interval", "timeout", "out", "where_sql"}
        params = {k: v for k, v in asdict(self).items() if k not in skip}
        params["tap_url"] = redact(self.tap_url)
        blob = json.dumps({"params": params, "version": __version__}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]
