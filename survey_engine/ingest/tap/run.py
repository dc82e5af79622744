"""TAP ingest pipeline: plan pages -> fetch them (several in flight) -> verify against the
service's counts -> the file-import pipeline turns the pages into a HATS collection with margins.

Resumable: pages and the manifest live in ``OUT.pages/``; re-running the same command skips
finished pages, and the import stage resumes from its own done-markers.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from survey_engine.catalog.layout import atomic_write_text, remove_tree
from survey_engine.ingest.file_import.arguments import ImportArguments
from survey_engine.ingest.file_import.run import run_import
from survey_engine.ingest.readers import InputError, astropy_to_arrow
from survey_engine.ingest.tap import adql
from survey_engine.ingest.tap.arguments import TapIngestArguments
from survey_engine.ingest.tap.client import TapError, TapService
from survey_engine.ingest.tap.manifest import Manifest
from survey_engine.ingest.tap.pages import (
    Page,
    deeper_order,
    healpix_expr,
    in_page,
    initial_pixel_pages,
    predicate,
    ranges_from_counts,
)
from survey_engine.redact import redact_url

REPORT_FILE = "tap_ingest.json"
VERIFY_MAX_ORDER = 7


@dataclass
class IngestResult:
    out: Path
    rows: int = 0
    pages: int = 0
    splits: int = 0
    retries: int = 0
    queries: int = 0
    paging: str = ""
    seconds_fetching: float = 0.0
    verification: dict = field(default_factory=dict)
    up_to_date: bool = False
    resumed: bool = False
    partitions: int = 0
    margin_rows: int = 0

    def summary(self) -> str:
        if self.up_to_date:
            return f"{self.out}: already up to date ({self.rows} rows), nothing to do"
        rate = self.rows / self.seconds_fetching if self.seconds_fetching > 0 else float("nan")
        v = self.verification
        parts = [
            f"{self.rows} rows in {self.pages} pages ({self.paging} paging, {self.splits} pages split, {self.retries} retries, "
            f"{rate:,.0f} rows/s fetching)",
            f"checked against the service: {v.get('method')}, {v.get('groups')} groups, all equal"
            if v.get("ok")
            else "",
            f"catalog: {self.partitions} partitions, margin {self.margin_rows} rows -> {self.out}",
        ]
        if self.resumed:
            parts.append("resumed from an earlier interrupted run")
        return "; ".join(p for p in parts if p)


class Ingest:
    """One ingest run: the service, the manifest and the counters shared by the fetch threads."""

    def __init__(self, args: TapIngestArguments, progress: bool):
        self.args = args
        self.service = TapService(
            args.tap_url,
            token=args.token,
            basic_auth=args.basic_auth,
            mode=args.mode,
            timeout=args.timeout,
            retries=args.retries,
            backoff=args.backoff,
            min_interval=args.min_interval,
        )
        self.manifest = Manifest(args.pages_dir, args.fingerprint(), args.describe_source())
        self.progress = progress
        self.queries = 0
        self.bar = None

    # -- planning ----------------------------------------------------------------------------
    def resolve_paging(self) -> str:
        paging = self.args.paging
        if paging != "auto":
            return paging
        if self.service.supports("ivo_healpix_index"):
            return "healpix"
        return "contains"

    def count_pixels(
        self, order: int, within: tuple[int, int] | None = None, limit: int | None = None
    ) -> dict[int, int]:
        """Row counts per nested pixel at ``order`` from the service (only within one pixel if given)."""
        a = self.args
        expr = healpix_expr(order, a.ra_column, a.dec_column)
        preds = [a.where_sql]
        if within is not None:
            preds.append(f"{healpix_expr(within[0], a.ra_column, a.dec_column)} = {within[1]}")
        query = adql.select(a.table, [f"{expr} AS hpx", "COUNT(*) AS n"], preds) + " GROUP BY hpx"
        maxrec = (limit or 12 * 4**order) + 1
        answer = self.service.query(
            query, maxrec, f"count at order {order}" + (f" in pixel {within}" if within else "")
        )
        self.queries += 1
        if answer.overflow or len(answer.table) >= maxrec:
            raise TapError(
                f"{self.service.label}: the per-pixel count at order {order} came back truncated\n  query: {query}"
            )
        return {int(p): int(n) for p, n in zip(answer.table["hpx"], answer.table["n"])}

    def plan(self, paging: str) -> list[Page]:
        a = self.args
        if paging == "keyset":
            return [Page("keyset", number=0)]
        if paging in ("contains", "id"):
            return initial_pixel_pages(paging, a.order)
        counts = self.count_pixels(a.order)
        pages, dense = ranges_from_counts(a.order, 0, 12 * 4**a.order - 1, counts, a.page_rows)
        todo = [(a.order, pix, n) for pix, n in dense]
        while todo:
            order, pix, n = todo.pop()
            deeper = deeper_order(order, n, a.page_rows, a.max_order)
            if deeper == order:  # already at the deepest order: let the fetch report it
                pages.append(Page("healpix", order, pix, pix))
                continue
            shift = 4 ** (deeper - order)
            sub = self.count_pixels(deeper, (order, pix), limit=min(shift, n))
            sub_pages, sub_dense = ranges_from_counts(
                deeper, pix * shift, (pix + 1) * shift - 1, sub, a.page_rows
            )
            pages += sub_pages
            todo += [(deeper, p, c) for p, c in sub_dense]
        return sorted(pages, key=lambda p: (p.lo << 2 * (a.max_order - p.order)))

    # -- fetching ----------------------------------------------------------------------------
    def page_query(self, page: Page) -> tuple[str, int]:
        a = self.args
        preds = [predicate(page, a.ra_column, a.dec_column, a.id_column), a.where_sql]
        if page.kind == "keyset":
            return adql.select(
                a.table, a.columns, preds, top=a.page_rows, order_by=a.id_column
            ), a.page_rows + 1
        return adql.select(a.table, a.columns, preds), a.page_rows

    def fetch(self, page: Page) -> tuple[str, object]:
        """Fetch one page: ("done", rows) after writing its file, or ("split", children)."""
        a = self.args
        query, maxrec = self.page_query(page)
        answer = self.service.query(query, maxrec, page.key)
        table = answer.table
        fetched = len(table)
        if page.kind != "keyset" and (answer.overflow or fetched >= maxrec):
            if not page.can_split(a.max_order):
                raise TapError(
                    f"{self.service.label}: page {page.key}: more than {a.page_rows} rows even at the deepest order "
                    f"({page.order}); raise --page-rows (the service's MAXREC permitting) or --max-order\n  query: {query}"
                )
            children = page.children()
            self.manifest.mark_split(page, children)
            return "split", children
        if page.kind == "contains" and fetched:
            table = table[in_page(page, np.asarray(table[a.ra_column]), np.asarray(table[a.dec_column]))]
        rows = len(table)
        if rows:
            arrow = astropy_to_arrow(table, f"{self.service.label} page {page.key}", {})
            target = self.manifest.page_file(page)
            tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
            pq.write_table(arrow, tmp)
            os.replace(tmp, target)
        extra = {}
        if page.kind == "keyset":
            ids = np.asarray(table[a.id_column]) if rows else np.zeros(0, np.int64)
            # A service that caps a page below TOP is harmless here: the next page starts after the last id.
            extra = {
                "next_after": int(ids.max()) if rows else None,
                "final": fetched < a.page_rows and not answer.overflow,
            }
        self.manifest.mark_done(page, rows, fetched, answer.seconds, answer.retries, **extra)
        self.queries += 1 + answer.retries
        return "done", rows

    def run_pages(self) -> None:
        pending = [p for p in self.manifest.pages()]
        todo: list[Page] = []
        while pending:  # expand pages split in an earlier run
            page = pending.pop()
            if self.manifest.is_split(page):
                pending += self.manifest.children(page)
            elif not self.manifest.is_done(page):
                todo.append(page)
        done_rows = sum(e["rows"] for e in self.manifest.done_entries())
        total = len(self.manifest.done_entries()) + len(todo)
        self.bar = _progress(self.progress, total, len(self.manifest.done_entries()), done_rows)
        if self.manifest.paging == "keyset":
            self._run_keyset()
        else:
            self._run_parallel(todo)
        if self.bar is not None:
            self.bar.close()

    def _run_parallel(self, todo: list[Page]) -> None:
        with ThreadPoolExecutor(max_workers=self.args.pages_in_flight, thread_name_prefix="tap-page") as pool:
            futures = {pool.submit(self.fetch, p): p for p in todo}
            try:
                while futures:
                    finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        futures.pop(fut)
                        outcome, value = fut.result()
                        if outcome == "split":
                            for child in value:
                                futures[pool.submit(self.fetch, child)] = child
                            self._tick(0, added=len(value))
                            self._tick(0)  # the split page itself is done
                        else:
                            self._tick(value)
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise

    def _run_keyset(self) -> None:
        pages = self.manifest.pages()
        page = pages[-1]
        while True:
            entry = self.manifest.state["done"].get(page.key)
            if entry is None:
                _, rows = self.fetch(page)
                self._tick(rows)
                entry = self.manifest.state["done"][page.key]
            if entry.get("final") or entry.get("next_after") is None:
                return
            page = Page("keyset", after=entry["next_after"], number=page.number + 1)
            if page.to_json() not in self.manifest.state["planned"]:
                self.manifest.add_planned(page)
            self._tick(0, added=1)

    def _tick(self, rows: int, added: int = 0) -> None:
        if self.bar is None:
            return
        if added:
            self.bar.total += added
        else:
            self.bar.update(1)
            self.bar.rows += rows
        elapsed = max(time.monotonic() - self.bar.t0, 1e-9)
        rate = (self.bar.rows - self.bar.rows0) / elapsed
        self.bar.set_postfix(
            rows=f"{self.bar.rows:,}", rows_s=f"{rate:,.0f}", retries=self.service.retry_count, refresh=False
        )

    # -- verification ------------------------------------------------------------------------
    def verify(self, paging: str) -> dict:
        """Compare what landed with the service's own counts; raise if anything is lost or doubled."""
        a = self.args
        entries = self.manifest.done_entries()
        total = sum(e["rows"] for e in entries)
        report: dict = {"rows": total, "pages": len(entries)}
        if paging == "healpix":
            vorder = min(a.order, VERIFY_MAX_ORDER)
            counts = self.count_pixels(vorder)
            groups = _merge_groups([(Page.from_json(e["page"]), e["rows"]) for e in entries], vorder)
            bad = []
            for lo, hi, rows in groups:
                expected = sum(n for p, n in counts.items() if lo <= p <= hi)
                if expected != rows:
                    bad.append(
                        {"pixels": f"order {vorder} pixels {lo}..{hi}", "service": expected, "landed": rows}
                    )
            report.update(
                method=f"per-pixel COUNT(*) at order {vorder}",
                groups=len(groups),
                service_rows=sum(counts.values()),
                mismatches=bad,
            )
        else:
            query = adql.select(a.table, ["COUNT(*) AS n"], [a.where_sql])
            answer = self.service.query(query, 2, "total count")
            self.queries += 1
            expected = int(answer.table["n"][0])
            bad = (
                [] if expected == total else [{"pixels": "whole table", "service": expected, "landed": total}]
            )
            report.update(
                method="COUNT(*) of the whole request", groups=1, service_rows=expected, mismatches=bad
            )
        if a.id_column:
            ids = [
                pq.read_table(
                    self.manifest.page_file(Page.from_json(e["page"])), columns=[a.id_column]
                ).column(0)
                for e in entries
                if e["rows"]
            ]
            ids = pa.chunked_array(ids).to_numpy() if ids else np.zeros(0)
            dupes = int(len(ids) - len(np.unique(ids)))
            report["duplicate_ids"] = dupes
            if dupes:
                bad.append(
                    {
                        "pixels": "all pages",
                        "service": "unique ids",
                        "landed": f"{dupes} duplicated {a.id_column} values",
                    }
                )
        report["ok"] = not bad
        if bad:
            lines = "\n".join(
                f"  {b['pixels']}: service {b['service']}, landed {b['landed']}" for b in bad[:10]
            )
            raise TapError(
                f"{self.service.label}: table {a.table}: the pages do not add up to the service's counts "
                f"(did the table change during the ingest?); pages kept in {a.pages_dir}:\n{lines}"
            )
        return report


def _merge_groups(pages: list[tuple[Page, int]], order: int) -> list[tuple[int, int, int]]:
    """Group pages into runs of whole pixels at ``order`` so each run's rows can be compared
    with the server's per-pixel counts: (first pixel, last pixel, rows)."""
    spans = []
    for page, rows in pages:
        shift = 2 * (page.order - order)
        spans.append((page.lo >> shift, page.hi >> shift, rows))
    spans.sort()
    groups: list[list[int]] = []
    for lo, hi, rows in spans:
        if groups and lo <= groups[-1][1]:
            groups[-1][1] = max(groups[-1][1], hi)
            groups[-1][2] += rows
        else:
            groups.append([lo, hi, rows])
    return [tuple(g) for g in groups]


def _progress(enabled: bool, total: int, done: int, rows: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=done, unit="page", desc="ingest pages", dynamic_ncols=True)
    bar.rows, bar.rows0, bar.t0 = rows, rows, time.monotonic()
    return bar


def run_ingest(args: TapIngestArguments, client=None, progress: bool = True) -> IngestResult:
    """Ingest ``args.table`` from the TAP service into a HATS collection at ``args.out``."""
    from survey_engine.catalog.layout import output_path
    from survey_engine.catalog.lock import output_lock

    out = Path(args.out)
    output_path(out)
    with output_lock(out, f"ingest --tap {redact_url(args.tap_url)} --table {args.table} --out {args.out}"):
        return _run_ingest(args, out, client, progress)


def _run_ingest(args: TapIngestArguments, out: Path, client, progress: bool) -> IngestResult:
    fingerprint = args.fingerprint()
    report_path = out / REPORT_FILE
    if report_path.exists():
        report = json.loads(report_path.read_text())
        if report.get("fingerprint") == fingerprint:
            return IngestResult(
                out=out, rows=report["rows"], pages=report["pages"], up_to_date=True, paging=report["paging"]
            )
        raise InputError(f"{out}: already holds a different TAP ingest; choose another --out or remove it")
    if out.exists() and any(out.iterdir()) and not args.pages_dir.exists():
        raise InputError(f"{out}: already exists and is not this ingest; choose another --out or remove it")

    ingest = Ingest(args, progress)
    manifest = ingest.manifest
    resumed = manifest.resumed
    if manifest.paging is None:
        paging = ingest.resolve_paging()
        pages = ingest.plan(paging)
        manifest.set_plan(paging, pages, ingest.queries)
    paging = manifest.paging
    t0 = time.monotonic()
    ingest.run_pages()
    seconds = time.monotonic() - t0
    verification = ingest.verify(paging)

    entries = manifest.done_entries()
    rows = sum(e["rows"] for e in entries)
    if rows == 0:
        raise InputError(
            f"{ingest.service.label}: table {args.table}: the request returned no rows (WHERE {args.where!r})"
        )
    import_args = ImportArguments(
        [str(manifest.page_dir)],
        args.out,
        ra_column=args.ra_column,
        dec_column=args.dec_column,
        id_column=args.id_column,
        max_rows=args.max_rows,
        highest_order=args.highest_order,
        margin_arcsec=args.margin_arcsec,
        name=args.name,
    )
    imported = run_import(import_args, client=client, progress=progress)
    if imported.rows != rows:
        raise RuntimeError(
            f"internal check failed: {rows} rows landed in pages but the import wrote {imported.rows}"
        )
    result = IngestResult(
        out=out,
        rows=rows,
        pages=len(entries),
        splits=len(manifest.state["split"]),
        retries=sum(e["retries"] for e in entries),
        queries=manifest.state["plan_queries"] + ingest.queries,
        paging=paging,
        seconds_fetching=seconds,
        verification=verification,
        resumed=resumed,
        partitions=imported.partitions,
        margin_rows=imported.margin_rows,
    )
    report = {
        "fingerprint": fingerprint,
        "source": args.describe_source(),
        "paging": paging,
        "rows": rows,
        "pages": result.pages,
        "pages_split": result.splits,
        "retries": result.retries,
        "seconds_fetching_this_run": round(seconds, 3),
        "verification": verification,
        "page_rows": args.page_rows,
        "order": args.order,
        "mode": args.mode,
    }
    atomic_write_text(report_path, json.dumps(report, indent=1))
    remove_tree(args.pages_dir, out.parent)
    return result
