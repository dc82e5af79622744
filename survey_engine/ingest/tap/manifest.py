"""The resume plan of a TAP ingest: which pages are planned, finished (with their row counts) or
split, kept in ``OUT.pages/manifest.json`` and rewritten atomically after every page.

A page's Parquet file is renamed into place before the manifest names it, so a crash at any
moment leaves either a finished page (file + entry) or an unfinished one (re-fetched on resume);
a stray file without an entry is overwritten. No credentials are ever stored here.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from survey_engine.catalog.layout import atomic_write_text
from survey_engine.ingest.readers import InputError
from survey_engine.ingest.tap.pages import Page


class Manifest:
    def __init__(self, folder: Path, fingerprint: str, source: dict):
        self.folder = folder
        self.path = folder / "manifest.json"
        self.page_dir = folder / "pages"
        self._lock = threading.Lock()
        self.resumed = False
        if self.path.exists():
            state = json.loads(self.path.read_text())
            if state.get("fingerprint") != fingerprint:
                raise InputError(
                    f"{folder}: holds pages of a different ingest (other service, table, columns, WHERE or paging); "
                    "remove it or choose another --out"
                )
            self.state = state
            self.resumed = bool(state["done"]) or bool(state["planned"])
        else:
            self.state = {
                "fingerprint": fingerprint,
                "source": source,
                "paging": None,
                "planned": [],
                "done": {},
                "split": {},
                "plan_queries": 0,
            }
        self.page_dir.mkdir(parents=True, exist_ok=True)

    # -- plan --------------------------------------------------------------------------------
    @property
    def paging(self) -> str | None:
        return self.state["paging"]

    def set_plan(self, paging: str, pages: list[Page], plan_queries: int) -> None:
        with self._lock:
            self.state["paging"] = paging
            self.state["planned"] = [p.to_json() for p in pages]
            self.state["plan_queries"] = plan_queries
            self._save()

    def pages(self) -> list[Page]:
        return [Page.from_json(p) for p in self.state["planned"]]

    # -- progress ----------------------------------------------------------------------------
    def page_file(self, page: Page) -> Path:
        return self.page_dir / f"{page.key}.parquet"

    def is_done(self, page: Page) -> bool:
        entry = self.state["done"].get(page.key)
        return entry is not None and (entry["rows"] == 0 or self.page_file(page).exists())

    def is_split(self, page: Page) -> bool:
        return page.key in self.state["split"]

    def children(self, page: Page) -> list[Page]:
        return [Page.from_json(c) for c in self.state["split"][page.key]]

    def mark_done(self, page: Page, rows: int, fetched: int, seconds: float, retries: int, **extra) -> None:
        with self._lock:
            entry = {
                "page": page.to_json(),
                "rows": rows,
                "fetched": fetched,
                "seconds": round(seconds, 3),
                "retries": retries,
            }
            self.state["done"][page.key] = entry | extra
            self._save()

    def mark_split(self, page: Page, children: list[Page]) -> None:
        with self._lock:
            self.state["split"][page.key] = [c.to_json() for c in children]
            self._save()

    def add_planned(self, page: Page) -> None:
        with self._lock:
            self.state["planned"].append(page.to_json())
            self._save()

    def done_entries(self) -> list[dict]:
        return list(self.state["done"].values())

    def _save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.state, indent=0))
