"""Arguments of a file import, validated before any work starts."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from survey_engine.arguments import NAME_LIST, param
from survey_engine.catalog.layout import check_name, output_path
from survey_engine.catalog.storage import is_remote
from survey_engine.ingest.arguments import (  # noqa: F401  (the defaults are imported from here too)
    DEFAULT_HIGHEST_ORDER,
    DEFAULT_MARGIN_ARCSEC,
    DEFAULT_MAX_ROWS,
    CatalogBuildArguments,
)
from survey_engine.ingest.readers import InputError, expand_inputs


@dataclass
class ImportArguments(CatalogBuildArguments):
    """Everything an import needs. ``inputs`` may hold files, folders and globs."""

    inputs: list[str] = param(
        help="files, folders or globs",
        role="positional",
        type=NAME_LIST,
        nargs="+",
        metavar="INPUT",
        yaml=None,
        job="source",
    )
    out: str = param(help="output collection folder", role="output", required=True, yaml=None, job="output")
    # auto: from the UCDs (pos.eq.ra;meta.main), else the column named ra (ingest/coordinates.py)
    ra_column: str = param(
        "auto",
        "RA column (degrees; default auto: the column whose UCD is pos.eq.ra;meta.main, "
        "else the one named ra)",
        name="ra",
    )
    dec_column: str = param(
        "auto",
        "Dec column (degrees; default auto: UCD pos.eq.dec;meta.main, else the column named dec)",
        name="dec",
    )
    id_column: str | None = param(None, "id column (optional; must have no empty values)", name="id")
    drop_invalid: bool = param(
        False,
        "drop rows with missing/NaN RA/Dec or Dec outside [-90, 90] (counted) instead of failing",
        type=bool,
    )
    chunk_rows: int = 1_000_000
    files: list[str] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if not self.inputs:
            raise InputError("no input files given")
        self.check_catalog_build()
        if self.chunk_rows < 1:
            raise InputError(f"chunk_rows must be positive, got {self.chunk_rows}")
        for label, col in (("--ra", self.ra_column), ("--dec", self.dec_column)):
            if not col:
                raise InputError(f"{label} column name is empty")
        if not is_remote(self.out):  # an s3:// output stays a URL (built locally, then uploaded)
            self.out = str(Path(self.out))
        # the name becomes a folder inside the output: a plain name only (never '..', '/x', '')
        self.name = (
            check_name(self.name, "--name (the catalog name)")
            if self.name is not None
            else output_path(self.out).name
        )
        self.files = expand_inputs(self.inputs)
        if "auto" in (self.ra_column, self.dec_column):
            from survey_engine.ingest.coordinates import find_coordinates

            self.ra_column, self.dec_column = find_coordinates(self.files[0], self.ra_column, self.dec_column)
        out = os.path.abspath(self.out)
        for f in self.files:
            if os.path.abspath(f).startswith(out + os.sep):
                raise InputError(f"{f}: input lies inside the output folder {self.out}")

    @property
    def staging(self) -> Path:
        return Path(self.out + ".partial")

    def fingerprint(self) -> str:
        """Hash of the inputs (path, size, mtime) and every parameter: same hash, same catalog."""
        from survey_engine.version import __version__

        params = {k: v for k, v in asdict(self).items() if k not in ("files", "inputs", "out")}
        stats = []
        for f in self.files:
            st = os.stat(f)
            stats.append([os.path.abspath(f), st.st_size, int(st.st_mtime)])
        blob = json.dumps({"params": params, "files": stats, "version": __version__}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]
