"""Arguments of a TAP ingest, validated before any request is sent."""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from dataclasses import InitVar, asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from survey_engine.arguments import (
    AT_LEAST_1,
    NAME_LIST,
    NAMES,
    NOT_NEGATIVE,
    POSITIVE,
    param,
    positive_int,
    within,
)
from survey_engine.ingest.arguments import CatalogBuildArguments
from survey_engine.ingest.readers import InputError
from survey_engine.ingest.tap import adql
from survey_engine.ingest.tap.client import PRESETS, redact
from survey_engine.redact import split_userinfo


def _token_from_env(variable: str | None) -> str | None:
    """The bearer token held by the environment variable ``variable`` (never the token itself on a command line)."""
    import os

    return os.environ.get(variable) or None if variable else None


PAGINGS = ("auto", "healpix", "contains", "id", "keyset")
GAIA_ID_ORDER = 12  # Gaia source_id // 2**35 is the order-12 nested HEALPix pixel
GAIA_ID_SHIFT = 35


@dataclass
class TapIngestArguments(CatalogBuildArguments):
    """Everything an ingest needs: ``table`` (+ ``columns``, ``where``) from the service at ``tap_url``
    into a HATS collection at ``out``. ``tap_url`` may also be a preset name (see client.PRESETS).

    paging: ``healpix`` (ivo_healpix_index ranges, counted first), ``contains`` (CONTAINS with a
    circle around each pixel + an exact client-side pixel test), ``id`` (Gaia-style source_id
    ranges), ``keyset`` (``id > last ORDER BY id``), or ``auto`` (healpix if the service declares
    ivo_healpix_index, else id for a preset that says so, else contains).
    """

    tap_url: str = param(
        help="TAP service URL, or a named service: gaia, vizier, simbad, irsa, noirlab",
        name="tap",
        required=True,
        metavar="URL",
        yaml="url",
        job="source",
    )
    table: str = param(help="table name, e.g. gaiadr3.gaia_source", required=True, job="source")
    out: str = param(help="output collection folder", role="output", required=True, yaml=None, job="output")
    columns: list[str] | None = param(
        None,
        "comma-separated columns (default: all; ra/dec/id are always added)",
        type=NAME_LIST,
        check=NAMES,
        job="source",
    )
    where: str | None = param(None, "ADQL condition, ANDed with the paging predicate", job="source")
    ra_column: str = param("ra", "RA column (default ra)", name="ra", job="source")
    dec_column: str = param("dec", "Dec column (default dec)", name="dec", job="source")
    id_column: str | None = param(
        None,
        "unique id column (checked for duplicates; needed by id and keyset paging)",
        name="id",
        job="source",
    )
    order: int = param(
        3, "HEALPix order the plan starts from (default 3)", type=int, check=within(0, 12), job="source"
    )
    max_order: int = param(20, "deepest order a dense page may split to (default 20)", type=int, job="source")
    page_rows: int = param(
        100_000,
        "most rows per query (MAXREC; default 100,000)",
        type=int,
        check=AT_LEAST_1,
        parse=positive_int,
        job="source",
    )
    pages_in_flight: int = param(
        4,
        "queries (pages) running at once (default 4)",
        type=int,
        check=AT_LEAST_1,
        parse=positive_int,
        job="source",
    )
    paging: str = param(
        "auto",
        "how to cut the request (default auto: healpix if the service has ivo_healpix_index)",
        choices=PAGINGS,
        job="source",
    )
    mode: str = param(
        "sync",
        "use asynchronous (UWS) jobs instead of sync queries",
        name="async_mode",
        type=bool,
        flags=("--async",),
        public_default=False,
        convert=lambda on: "async" if on else "sync",
        job="source",
    )
    retries: int = param(
        6,
        "retries per page on timeouts and 5xx answers (default 6)",
        type=int,
        check=NOT_NEGATIVE,
        job="source",
    )
    backoff: float = 0.5
    min_interval: float = param(
        0.0,
        "politeness: seconds between query starts (default 0)",
        type=float,
        check=NOT_NEGATIVE,
        job="source",
    )
    timeout: float = param(
        300.0, "seconds per request (default 300)", type=float, check=POSITIVE, job="source"
    )
    token: str | None = param(
        None,
        "environment variable holding a bearer token, if the service needs one (never logged)",
        name="token_env",
        public_default="SURVEY_ENGINE_TAP_TOKEN",
        convert=_token_from_env,
        job="source",
        repr=False,
    )
    where_sql: str | None = field(default=None, init=False, repr=False)
    basic_auth: tuple[str, str] | None = field(default=None, init=False, repr=False)
    workers: InitVar[int | None] = None  # deprecated name of pages_in_flight

    def __post_init__(self, workers: int | None = None) -> None:
        if workers is not None:
            warnings.warn(
                "TapIngestArguments(workers=N) is deprecated: pages in flight are pages_in_flight=N "
                "(--pages-in-flight); --workers means local Dask workers",
                DeprecationWarning,
                stacklevel=3,
            )
            self.pages_in_flight = workers
        preset = PRESETS.get(self.tap_url.lower()) if self.tap_url else None
        if preset:
            self.tap_url = preset["url"]
            if self.paging == "auto" and preset.get("paging"):
                self.paging = preset["paging"]
            if self.id_column is None and preset.get("id"):
                self.id_column = preset["id"]
        if not self.tap_url or not re.match(r"^https?://[^\s/]+", self.tap_url):
            raise InputError(
                f"--tap {redact(self.tap_url or '')!r}: not an http(s) URL or a known service ({', '.join(PRESETS)})"
            )
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
            raise InputError(
                f"--paging id splits Gaia-style ids down to order {GAIA_ID_ORDER}; --order {self.order} is deeper"
            )
        if not self.order <= self.max_order <= 29:
            raise InputError(f"--max-order must be within --order..29, got {self.max_order}")
        if self.page_rows < 1:
            raise InputError(f"--page-rows must be positive, got {self.page_rows}")
        if self.pages_in_flight < 1:
            raise InputError(f"--pages-in-flight must be at least 1, got {self.pages_in_flight}")
        if self.retries < 0 or self.backoff < 0 or self.min_interval < 0 or self.timeout <= 0:
            raise InputError("--retries, backoff and --min-interval must be >= 0 and the timeout > 0")
        self.check_catalog_build()
        self.out = str(Path(self.out))
        from survey_engine.catalog.layout import check_name, output_path

        self.name = (
            check_name(self.name, "--name (the catalog name)")
            if self.name is not None
            else output_path(self.out).name
        )

    @property
    def pages_dir(self) -> Path:
        return Path(self.out + ".pages")

    def describe_source(self) -> dict:
        """What was asked of which service: safe to log and store (no credentials)."""
        return {
            "service": redact(self.tap_url),
            "table": self.table,
            "columns": self.columns,
            "where": self.where,
            "ra": self.ra_column,
            "dec": self.dec_column,
            "id": self.id_column,
        }

    def fingerprint(self) -> str:
        """Hash of the request and of everything that shapes the pages and the catalog."""
        from survey_engine.version import __version__

        skip = {
            "token",
            "basic_auth",
            "pages_in_flight",
            "mode",
            "retries",
            "backoff",
            "min_interval",
            "timeout",
            "out",
            "where_sql",
        }
        params = {k: v for k, v in asdict(self).items() if k not in skip}
        params["tap_url"] = redact(self.tap_url)
        blob = json.dumps({"params": params, "version": __version__}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]
