"""Resume plan of an import: a staging folder of done-markers beside the output.

``OUT.partial/`` holds ``fingerprint`` (the arguments' hash), ``histograms/`` (one ``.npz`` per
finished chunk), ``shards/`` (Arrow IPC shards whose ``.index.npz`` marks them done) and
``collection/`` (the catalog being written; a partition file exists only once complete). A
re-run with the same arguments reuses every finished piece; a different fingerprint starts over.
Only when everything is written is ``collection/`` renamed to ``OUT``. ``.owner`` holds the token
of the run that owns the folder now (``catalog.owner``): a task of an earlier run still running
on a live cluster publishes nothing into it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from survey_engine.catalog.build import remove_unfinished_files
from survey_engine.catalog.layout import publish_folder, remove_tree
from survey_engine.catalog.owner import claim, release


class ResumePlan:
    def __init__(self, staging: Path, fingerprint: str):
        self.root = Path(staging)
        self.fingerprint = fingerprint
        marker = self.root / "fingerprint"
        if self.root.exists() and (not marker.exists() or marker.read_text().strip() != fingerprint):
            remove_tree(self.root, self.root.parent)
        self.resumed = self.root.exists()
        for sub in ("histograms", "shards", "collection"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        if not marker.exists():
            marker.write_text(fingerprint)
        # this run's claim: a task of an earlier run still running on a live cluster writes nothing here
        self.owner = claim(self.root)

    @property
    def collection_dir(self) -> Path:
        return self.root / "collection"

    def histogram_path(self, chunk: int) -> Path:
        return self.root / "histograms" / f"chunk_{chunk:06d}.npz"

    def load_histogram(self, chunk: int):
        path = self.histogram_path(chunk)
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}

    def main_shard(self, chunk: int) -> str:
        return str(self.root / "shards" / f"main_{chunk:06d}.arrow")

    def margin_shard(self, chunk: int) -> str:
        return str(self.root / "shards" / f"margin_{chunk:06d}.arrow")

    def holds_work(self) -> bool:
        """Whether any piece of the import is done (a histogram, a shard or a partition file)."""
        return any(
            f.is_file()
            for sub in ("histograms", "shards", "collection")
            for f in (self.root / sub).rglob("*")
        )

    @contextmanager
    def discarded_if_nothing_done(self) -> Iterator[None]:
        """On failure, remove the staging folder unless it holds finished work to resume from: an
        import that failed before writing anything leaves nothing behind."""
        try:
            yield
        except BaseException:
            if not self.holds_work():
                shutil.rmtree(self.root, ignore_errors=True)
            raise

    def publish(self, out: Path) -> None:
        """Move the finished collection into place and drop the staging folder."""
        out = Path(out)
        if out.exists() and any(out.iterdir()):  # checked before the import started: only an empty folder
            raise FileExistsError(f"{out}: not empty; an import writes a new collection")
        release(self.root)  # from here a late task of this run is refused too
        remove_unfinished_files(self.collection_dir)  # half-written temporaries of a killed worker
        publish_folder(self.collection_dir, out, self.root.parent)
        remove_tree(self.root, self.root.parent)
