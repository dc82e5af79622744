"""Arguments of a file import, validated before any work starts."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from survey_engine.catalog.layout import check_name, output_path
from survey_engine.catalog.storage import is_remote
from survey_engine.ingest.readers import InputError, expand_inputs

DEFAULT_MAX_ROWS = 1_000_000
DEFAULT_MARGIN_ARCSEC = 5.0
DEFAULT_HIGHEST_ORDER = 10


@dataclass
class ImportArguments:
    """Everything an import needs. ``inputs`` may hold files, folders and globs."""

    inputs: list[str]
    out: str
    ra_column: str = "auto"  # auto: from the UCDs (pos.eq.ra;meta.main), else the column named ra (ingest/coordinates.py)
    dec_column: str = "auto"
    id_column: str | None = None
    max_rows: int = DEFAULT_MAX_ROWS
    highest_order: int = DEFAULT_HIGHEST_ORDER
    margin_arcsec: float | None = DEFAULT_MARGIN_ARCSEC
    name: str | None = None
    drop_invalid: bool = False
    chunk_rows: int = 1_000_000
    files: list[str] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if not self.inputs:
            raise InputError("no input files given")
        if self.max_rows is None or int(self.max_rows) < 1:
            raise InputError(f"--max-rows must be a positive number of rows, got {self.max_rows}")
        if not 0 <= int(self.highest_order) <= 13:
            raise InputError(f"--highest-order must be within 0..13, got {self.highest_order}")
        if self.margin_arcsec is not None and not float(self.margin_arcsec) >= 0:
            raise InputError(f"--margin must be >= 0 arcsec (0 for none), got {self.margin_arcsec}")
        if self.margin_arcsec is not None and float(self.margin_arcsec) == 0:
            self.margin_arcsec = None
        if self.margin_arcsec is not None and float(self.margin_arcsec) > 3600 * 10:
            raise InputError(f"--margin of {self.margin_arcsec} arcsec is larger than 10 degrees; use a smaller margin")
        if self.chunk_rows < 1:
            raise InputError(f"chunk_rows must be positive, got {self.chunk_rows}")
        for label, col in (("--ra", self.ra_column), ("--dec", self.dec_column)):
            if not col:
                raise InputError(f"{label} column name is empty")
        if not is_remote(self.out):  # an s3:// output stays a URL (built locally, then uploaded)
            self.out = str(Path(self.out))
        # the name becomes a folder inside the output: a plain name only (never '..', '/x', '')
        self.name = check_name(self.name, "--name (the catalog name)") if self.name is not None else output_path(self.out).name
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
        from survey_engine import __version__

        params = {k: v for k, v in asdict(self).items() if k not in ("files", "inputs", "out")}
        stats = []
        for f in self.files:
            st = os.stat(f)
            stats.append([os.path.abspath(f), st.st_size, int(st.st_mtime)])
        blob = json.dumps({"params": params, "files": stats, "version": __version__}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]
