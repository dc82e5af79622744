"""One TAP service as the ingest sees it: sync or async (UWS) queries through pyvo, retries with
backoff on transient failures, a politeness limit, and errors that name the query and the page.

Sync queries are POSTed here (so an HTML answer or a cut-off body is recognised for what it is)
and parsed by pyvo's TAPResults, which reads the *last* QUERY_STATUS of the VOTable (a truncated
DaCHS answer says OK at the top and OVERFLOW after the table). Async queries use pyvo's AsyncTAPJob.
"""

from __future__ import annotations

import io
import random
import re
import threading
import time
from dataclasses import dataclass

import requests

from survey_engine.errors import SurveyEngineError, UsageError
from survey_engine.redact import redact_text, redact_url

# Named services (the URLs astroquery's modules use), with the paging each supports best.
PRESETS: dict[str, dict] = {
    "gaia": {
        "url": "https://gea.esac.esa.int/tap-server/tap",
        "table": "gaiadr3.gaia_source",
        "id": "source_id",
        "paging": "id",
    },
    "vizier": {"url": "https://tapvizier.cds.unistra.fr/TAPVizieR/tap"},
    "simbad": {"url": "https://simbad.cds.unistra.fr/simbad/sim-tap"},
    "irsa": {"url": "https://irsa.ipac.caltech.edu/TAP"},
    "noirlab": {"url": "https://datalab.noirlab.edu/tap"},
}


class TapError(SurveyEngineError, RuntimeError):
    """A TAP request that failed for good; the message names the page and the query."""


class Truncated(Exception):
    """Internal: the answer was cut short (transient: the request is retried)."""


@dataclass
class Answer:
    table: object  # astropy Table
    overflow: bool
    seconds: float
    retries: int


redact = redact_url  # a URL fit for logs (see survey_engine.redact)


class TapService:
    """A TAP endpoint with a politeness limit (``min_interval`` seconds between request starts)
    and retries (``retries`` more attempts, exponential backoff from ``backoff`` seconds)."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        basic_auth: tuple[str, str] | None = None,
        mode: str = "sync",
        timeout: float = 300.0,
        retries: int = 6,
        backoff: float = 0.5,
        min_interval: float = 0.0,
        fmt: str = "votable/b2",
    ):
        try:
            import pyvo
        except ImportError:
            raise ImportError("TAP ingest needs pyvo: pip install 'survey_engine[tap]'") from None

        if mode not in ("sync", "async"):
            raise UsageError(f"query mode must be 'sync' or 'async', got {mode!r}")
        self.url = url.rstrip("/")
        self.label = redact(self.url)
        self.mode, self.timeout, self.retries, self.backoff = mode, timeout, retries, backoff
        self.min_interval, self.fmt = min_interval, fmt
        self._token = token
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "survey_engine TAP ingest"
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        elif basic_auth:
            self.session.auth = basic_auth
        self.pyvo = pyvo.dal.TAPService(self.url, session=self.session)
        self._lock = threading.Lock()
        self._next_start = 0.0
        self.retry_count = 0

    # -- capabilities ------------------------------------------------------------------------
    def supports(self, udf: str) -> bool:
        """Whether the service declares the ADQL user-defined function ``udf`` (False if unknown)."""
        try:
            adql = self.pyvo.get_tap_capability().get_adql()
            return adql is not None and adql.get_udf(udf) is not None
        except Exception:
            return False

    # -- queries -----------------------------------------------------------------------------
    def query(self, adql: str, maxrec: int, page: str) -> Answer:
        """Run ``adql`` with MAXREC=``maxrec``; retry transient failures; raise TapError for good."""
        import pyvo

        attempt, start = 0, time.monotonic()
        while True:
            self._polite()
            try:
                table, overflow = (
                    self._sync(adql, maxrec) if self.mode == "sync" else self._async(adql, maxrec)
                )
                return Answer(table, overflow, time.monotonic() - start, attempt)
            except pyvo.dal.DALQueryError as exc:
                if (
                    not server_side_failure(str(exc)) or attempt >= self.retries
                ):  # a refusal of the query: no retry
                    raise TapError(
                        self._clean(
                            f"{self.label}: page {page}: the service rejected the query: {exc}\n  query: {adql}"
                        )
                    ) from None
                attempt += 1  # the service failed while running a good query (e.g. a file-system race): retry
                with self._lock:
                    self.retry_count += 1
                time.sleep(self.backoff * 2 ** (attempt - 1) * (0.75 + 0.5 * random.random()))
            except _Permanent as exc:
                raise TapError(self._clean(f"{self.label}: page {page}: {exc}\n  query: {adql}")) from None
            except (
                requests.ConnectionError,
                requests.Timeout,
                Truncated,
                _Transient,
                pyvo.dal.DALServiceError,
                pyvo.dal.DALFormatError,
            ) as exc:
                if attempt >= self.retries:
                    raise TapError(
                        self._clean(
                            f"{self.label}: page {page}: failed after {attempt + 1} attempts; last error: {_short(exc)}\n  query: {adql}"
                        )
                    ) from None
                attempt += 1
                with self._lock:
                    self.retry_count += 1
                time.sleep(self.backoff * 2 ** (attempt - 1) * (0.75 + 0.5 * random.random()))

    def _clean(self, message: str) -> str:
        """An error message without the URL's secrets or the token (requests and pyvo quote the URL)."""
        return redact_text(message, self.url, *([f"x://h/?token={self._token}"] if self._token else []))

    def _polite(self) -> None:
        if self.min_interval <= 0:
            return
        with self._lock:
            now = time.monotonic()
            wait = self._next_start - now
            self._next_start = max(now, self._next_start) + self.min_interval
        if wait > 0:
            time.sleep(wait)

    def _sync(self, adql: str, maxrec: int):
        from astropy.io.votable import parse
        from pyvo.dal.tap import TAPResults

        data = {
            "REQUEST": "doQuery",
            "LANG": "ADQL",
            "QUERY": adql,
            "MAXREC": str(maxrec),
            "FORMAT": self.fmt,
        }
        resp = self.session.post(self.url + "/sync", data=data, timeout=self.timeout)
        body = resp.content
        if resp.status_code >= 500 or resp.status_code in (408, 429):
            raise _Transient(f"HTTP {resp.status_code} from the service")
        head = body[:512].lstrip().lower()
        if head.startswith(b"<!doctype html") or head.startswith(b"<html") or b"<html" in head[:200]:
            raise _Permanent(
                f"the service answered HTML (HTTP {resp.status_code}), not a VOTable: is {self.label} a TAP endpoint?"
            )
        if resp.status_code >= 400 and b"VOTABLE" not in body[:2048].upper():
            raise _Permanent(f"HTTP {resp.status_code} from {self.label}/sync: {body[:200]!r}")
        if not body.rstrip().endswith(b"</VOTABLE>"):
            raise Truncated(f"the VOTable answer is cut short ({len(body)} bytes, no closing </VOTABLE>)")
        try:
            votable = parse(io.BytesIO(body), verify="ignore")
        except Exception as exc:
            raise Truncated(f"the VOTable answer cannot be parsed: {_short(exc)}") from None
        results = TAPResults(votable, url=self.url, session=self.session)  # raises DALQueryError on ERROR
        return results.to_table(), _overflowed(results)

    def _async(self, adql: str, maxrec: int):
        job = self.pyvo.submit_job(adql, maxrec=maxrec, format=self.fmt)
        try:
            job.run()
            job.wait(phases={"COMPLETED", "ERROR", "ABORTED"}, timeout=self.timeout)
            job.raise_if_error()
            results = job.fetch_result()
            return results.to_table(), _overflowed(results)
        finally:
            try:
                job.delete()
            except Exception:
                pass


class _Transient(Exception):
    pass


class _Permanent(Exception):
    pass


_SERVER_SIDE = re.compile(
    r"\[Errno \d+\]|internal (server )?error|traceback|timed? ?out|temporar|unavailable|too many|overload|try again"
    r"|stale lock|could not access the jobs table|notify the service operators",
    re.I,
)


def server_side_failure(message: str) -> bool:
    """Whether an ERROR answer reports the service failing (retry) rather than refusing the query.

    DaCHS, for one, reports a file-system race in its own job directories as a query ERROR
    ("[Errno 13] Permission denied: '/var/gavo/state/uwsjobs/...'"), seen here under several
    concurrent sync queries, and a lock on its UWS jobs table, held for a moment while it starts, as
    "Could not access the jobs table. This probably means there is a stale lock on it" (seen when
    queries arrived just after the server restarted); bad ADQL or unknown names never look like this."""
    return bool(_SERVER_SIDE.search(message))


def _overflowed(results) -> bool:
    return (results.query_status or "").upper() == "OVERFLOW"


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    text = re.sub(r"\s+", " ", text)
    return text[:300]
