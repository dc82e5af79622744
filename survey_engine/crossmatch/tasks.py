"""The work of one cross-match task: read a left partition and the right rows that can match it
(its partition and margin), find the pairs with the algorithm object (``algorithms.py``), and
assemble the matched rows.
``match.py`` plans the tasks and gathers or writes their results; ``joins.py`` and ``output.py``
use these pieces too, so they live below all three."""

from __future__ import annotations

import functools
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from survey_engine.catalog import storage
from survey_engine.catalog.catalog import read_partition
from survey_engine.catalog.healpix import SPATIAL_INDEX_COLUMN
from survey_engine.crossmatch.algorithms import HOWS, CrossmatchMethod
from survey_engine.crossmatch.epochs import EpochSpec
from survey_engine.crossmatch.plan import MatchTask
from survey_engine.errors import UsageError, option

__all__ = [
    "HOWS",
    "JOINS",
    "MatchParams",
    "match_task",
    "read_side",
    "shared_reads",
    "sorted_rows",
    "split_large_tasks",
    "whole_tasks",
]

JOINS = ("inner", "left", "outer")


@dataclass(frozen=True)
class MatchParams:
    """A match task's settings: the algorithm object (radius, how, k, min radius, self, kernel)
    plus what is not the algorithm's business - the join, the output suffixes, the columns read,
    the epochs positions are compared at and the columns read as nullable dtypes."""

    method: CrossmatchMethod
    join: str = "inner"
    suffixes: tuple[str, str] = ("_1", "_2")
    left_columns: tuple[str, ...] | None = None
    right_columns: tuple[str, ...] | None = None
    target_epoch: float | None = None  # positions are compared at this epoch (Julian year)
    left_epoch: EpochSpec | None = None  # how to move left rows there (None: already there)
    right_epoch: EpochSpec | None = None
    left_nullable: tuple[str, ...] = ()  # integer / boolean columns holding nulls: read as nullable dtypes
    right_nullable: tuple[str, ...] = ()

    def __post_init__(self):
        if not isinstance(self.method, CrossmatchMethod):
            raise UsageError(
                f"{option('--algorithm', 'algorithm')} must be a cross-match algorithm object, got {self.method!r}"
            )
        if self.join not in JOINS:
            raise UsageError(f"{option('--join', 'join')} must be one of {JOINS}, got {self.join!r}")
        if len(self.suffixes) != 2 or self.suffixes[0] == self.suffixes[1]:
            raise UsageError(
                f"{option('--suffixes', 'suffixes')} must be two different strings, got {self.suffixes}"
            )
        if (self.left_epoch or self.right_epoch) and self.target_epoch is None:
            raise UsageError(
                f"give the common epoch, {option('--epoch', 'epoch')}, to propagate positions to"
            )

    # the algorithm's parameters, read through (results, joins and output name them so)
    @property
    def radius_arcsec(self) -> float:
        return self.method.radius_arcsec

    @property
    def how(self) -> str:
        return self.method.how

    @property
    def k(self) -> int:
        return self.method.k

    @property
    def min_radius_arcsec(self) -> float:
        return self.method.min_radius_arcsec

    @property
    def exclude_self(self) -> bool:
        return self.method.exclude_self

    @property
    def algorithm(self) -> str:
        """The kernel's name (``zones``, ``kdtree``, ``grid``, ``gpu``)."""
        return self.method.name


def read_side(
    files,
    columns,
    ra: str,
    dec: str,
    epoch: EpochSpec | None = None,
    nullable=(),
    rows: dict | None = None,
    shared: SharedReads | None = None,
) -> pd.DataFrame:
    """The rows of ``files`` (a partition and its margin, or several), with the columns the match
    needs; each local file taken from ``shared`` (the run's shared reads) when given."""
    # _healpix_29 is always read: it routes rows to partitions and breaks ties
    extra = epoch.columns() if epoch else []
    cols = None if columns is None else list(dict.fromkeys([SPATIAL_INDEX_COLUMN, *columns, ra, dec, *extra]))
    rows = rows or {}

    def read(f) -> pd.DataFrame:
        return read_partition(f, cols, nullable=nullable, expected_rows=rows.get(f), read_only=True)

    def read_shared(f) -> pd.DataFrame:
        if shared is None or storage.is_remote(f):
            return read(f)
        key = (str(f), None if cols is None else tuple(cols), tuple(nullable), rows.get(f))
        return shared.get(key, lambda: read(f))

    frames = storage.map_concurrently(read_shared, list(files))  # remote files fetched side by side
    frames = [f for f in frames if len(f)]
    return (
        pd.concat(frames)
        if frames
        else (read_partition(files[0], cols, nullable=nullable).iloc[:0] if files else pd.DataFrame())
    )


class SharedReads:
    """Right-side reads shared by the match tasks of one run on threads of this process: a right
    partition or margin file next to several left partitions is read once, not once per left
    partition (a left in 48 partitions against a right in 12: 95 file reads became 53). At most
    ``max_bytes`` are held, the least recently used dropped first; a read another thread has under
    way is waited for, not repeated. Frames handed out are shared: the match only reads them."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.held: OrderedDict = OrderedDict()  # key -> (frame, bytes)
        self.reading: dict = {}  # key -> threading.Event of the read under way
        self.bytes = 0
        self.reads = self.hits = 0
        self.lock = threading.Lock()

    def get(self, key, read):
        while True:
            with self.lock:
                if key in self.held:
                    self.held.move_to_end(key)
                    self.hits += 1
                    return self.held[key][0]
                waiting = self.reading.get(key)
                if waiting is None:
                    done = self.reading[key] = threading.Event()
                    self.reads += 1
                    break
            waiting.wait()  # then take it from ``held`` (or read it, if it was not kept or failed)
        try:
            frame = read()
            size = frame_bytes(frame)
            with self.lock:
                if size <= self.max_bytes:
                    self.held[key] = (frame, size)
                    self.bytes += size
                    while self.bytes > self.max_bytes:
                        _, (_, dropped) = self.held.popitem(last=False)
                        self.bytes -= dropped
            return frame
        finally:
            with self.lock:
                del self.reading[key]
            done.set()


def frame_bytes(frame: pd.DataFrame) -> int:
    """About the bytes a frame holds (``memory_usage(deep=False)``: 8 per row for objects and
    strings), from the dtypes alone: ``memory_usage`` builds a Series per column, 1 ms a call."""
    width = sum(getattr(t, "itemsize", 8) for t in frame.dtypes)
    return len(frame) * width + int(frame.index.nbytes)


_SHARED_READS: SharedReads | None = None  # open while any run is inside a ``shared_reads`` block
_SHARED_USERS = 0
_SHARED_LOCK = threading.Lock()
SHARED_READ_BYTES = 256 << 20  # right files read by neighbouring tasks: reuse comes within a few tasks


@contextmanager
def shared_reads(max_bytes: int = SHARED_READ_BYTES) -> Iterator[SharedReads]:
    """Within the block, ``match_task`` calls run on threads of this process share their right-side
    reads (``SharedReads``). Runs at the same time (two ``compute()`` calls in a notebook's threads)
    share one; it is dropped when the last of them ends, so nothing outlives them. Tasks run by
    workers in other processes are not affected."""
    global _SHARED_READS, _SHARED_USERS
    with _SHARED_LOCK:
        if _SHARED_USERS == 0:
            _SHARED_READS = SharedReads(max_bytes)
        _SHARED_USERS += 1
        shared = _SHARED_READS
    try:
        yield shared
    finally:
        with _SHARED_LOCK:
            _SHARED_USERS -= 1
            if _SHARED_USERS == 0:
                _SHARED_READS = None


def _pairs(left: pd.DataFrame, right: pd.DataFrame, lcoords, rcoords, p: MatchParams):
    """Pairs (left idx, right idx, sep) of the algorithm, at the common epoch; a self-match's
    inner ``all`` lists each close pair once."""
    if len(left) == 0 or len(right) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0)
    lpos = _positions(left, lcoords, p.left_epoch, p.target_epoch)
    rpos = _positions(right, rcoords, p.right_epoch, p.target_epoch)
    li, ri, sep = p.method.match(left, right, lpos, rpos, lcoords, rcoords)
    if p.exclude_self and p.how == "all" and p.join == "inner":
        keep = _first_of_pair(left, right, li, ri, lcoords, rcoords)
        li, ri, sep = li[keep], ri[keep], sep[keep]
    return li, ri, sep


def _first_of_pair(left: pd.DataFrame, right: pd.DataFrame, li, ri, lcoords, rcoords) -> np.ndarray:
    """A self-match lists each close pair once: keep (a, b) only where a sorts before b by
    (_healpix_29, RA, Dec). The rule depends on the two rows alone, so it holds across partitions."""
    lh, rh = left.index.to_numpy()[li], right.index.to_numpy()[ri]
    lra, rra = left[lcoords[0]].to_numpy()[li], right[rcoords[0]].to_numpy()[ri]
    ldec, rdec = left[lcoords[1]].to_numpy()[li], right[rcoords[1]].to_numpy()[ri]
    return (lh < rh) | ((lh == rh) & ((lra < rra) | ((lra == rra) & (ldec < rdec))))


def _positions(frame: pd.DataFrame, coords, epoch: EpochSpec | None, target: float | None):
    if epoch is None:
        return frame[coords[0]].to_numpy(float), frame[coords[1]].to_numpy(float)
    return epoch.positions_at(frame, coords[0], coords[1], target)


def match_task(
    task: MatchTask, p: MatchParams, lcoords, rcoords, empty: pd.DataFrame, into=None
) -> pd.DataFrame | int:
    """Cross-match one left partition (run on a worker); ``empty`` is the output's empty frame.

    ``into`` (a ``runtime.SlotTarget``, for a task run on a thread of the process gathering the
    result): where the rows can go straight into the result's columns (plain NumPy columns of the
    output's dtypes, rows already in output order, no unmatched rows to add) they are written there
    and their count is returned; otherwise the frame, as without it."""
    file_rows = dict(task.file_rows)
    piece = task.row_stop is not None  # a piece of a split partition (split_large_tasks)
    if piece:
        left = _piece_rows(task, p, lcoords, file_rows)
    else:
        left = read_side([task.left_file], p.left_columns, *lcoords, p.left_epoch, p.left_nullable, file_rows)
    if len(left) == 0:
        return empty
    lhp = left.index.to_numpy()
    jobs, right_rows = task.right_jobs(lhp)  # only the right partitions holding left rows
    file_rows.update(right_rows)
    assigned = np.zeros(len(left), dtype=bool)
    for rows, _ in jobs:
        assigned[rows] = True
    if task.orphan_files and not assigned.all():
        jobs.append((np.flatnonzero(~assigned), task.orphan_files))
    matched = np.zeros(len(left), dtype=bool)
    found = []
    for rows, files in jobs:
        sub = left if len(rows) == len(left) else left.iloc[rows]
        # from the run's shared reads, if any: a right file beside several left partitions is read once
        right = read_side(
            list(files),
            p.right_columns,
            *rcoords,
            p.right_epoch,
            p.right_nullable,
            file_rows,
            shared=_SHARED_READS,
        )
        if piece and p.left_epoch is None and p.right_epoch is None:
            right = _near_rows(right, sub.index.to_numpy(), p.radius_arcsec, task.left_order)
        li, ri, sep = _pairs(sub, right, lcoords, rcoords, p)
        matched[rows[li]] = True
        found.append((sub, right, li, ri, sep))
    with_unmatched = p.join in ("left", "outer") and p.how != "one-to-one" and not matched.all()
    if into is not None and not with_unmatched:
        written = _write_into(into, found, p, empty)
        if written is not None:
            return written
    pieces = [_assemble(*pairs, p, empty) for pairs in found]
    if with_unmatched:
        unmatched = left.iloc[np.flatnonzero(~matched)]
        pieces.append(_assemble(unmatched, None, np.arange(len(unmatched)), None, None, p, empty))
    out = pd.concat(pieces) if pieces else empty
    return sorted_rows(out, empty)


def _write_into(into, found: list, p: MatchParams, meta: pd.DataFrame) -> int | None:
    """The pairs of every right job taken straight into ``into``'s column views (what ``_assemble``,
    ``concat`` and ``sorted_rows`` would give, row for row); None where that frame is not simply
    the jobs' rows in turn (the index not strictly increasing: ``sorted_rows`` would reorder) or a
    column is not a plain NumPy one of the output's dtype: the caller then assembles a frame (and
    ``ColumnSlots.put`` copies it over whatever was written here)."""
    wanted = meta.dtypes.to_dict()
    sources = [_output_sources(sub, right, li, ri, sep, p) for sub, right, li, ri, sep in found]
    if not sources or any(
        sub.index.dtype != meta.index.dtype
        or cols.keys() != wanted.keys()
        or any(not isinstance(a, np.ndarray) or a.dtype != wanted[c] for c, (a, _) in cols.items())
        for (sub, *_), cols in zip(found, sources)
    ):
        return None
    ends = np.cumsum([0] + [len(li) for _, _, li, _, _ in found])
    columns, index = into.arrays(int(ends[-1]))
    for (sub, _, li, _, _), start, stop in zip(found, ends[:-1], ends[1:]):
        _take_into(index[start:stop], sub.index.to_numpy(), li)
    if not bool(np.all(index[1:] > index[:-1])):
        return None
    for cols, start, stop in zip(sources, ends[:-1], ends[1:]):
        for name, (values, rows) in cols.items():
            _take_into(columns[name][start:stop], values, rows)
    return int(ends[-1])


def _take_into(out: np.ndarray, values: np.ndarray, rows: np.ndarray | None) -> None:
    if rows is None:
        out[:] = values
    else:  # mode="clip": no buffered copy (the rows are valid); "raise" buffers ``out``
        np.take(values, rows, out=out, mode="clip")


def _piece_rows(task: MatchTask, p: MatchParams, lcoords, file_rows: dict) -> pd.DataFrame:
    """A piece's left rows: its row range of the partition file, read once per worker process for
    all the pieces of the partition it runs (the file holds one row group: no range of it can be
    read alone). The cache is keyed by the file's identity and time stamp as well as its path, so
    a file written again is read again; a remote file is read for each piece."""
    args = (
        task.left_file,
        p.left_columns,
        *lcoords,
        p.left_epoch,
        p.left_nullable,
        file_rows.get(task.left_file),
    )
    try:
        st = None if storage.is_remote(task.left_file) else os.stat(task.left_file)
    except OSError:  # missing: the read says so, naming the file
        st = None
    if st is None:
        whole = _read_left(*args)
    else:
        try:
            whole = _read_left_cached((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns), *args)
        except TypeError:  # an unhashable argument: read it for this piece
            whole = _read_left(*args)
    return whole.iloc[task.row_start : task.row_stop]


def _read_left(file, columns, ra, dec, epoch, nullable, rows) -> pd.DataFrame:
    return read_side([file], columns, ra, dec, epoch, nullable, {} if rows is None else {file: rows})


@functools.lru_cache(maxsize=1)
def _read_left_cached(stamp: tuple, *args) -> pd.DataFrame:
    return _read_left(*args)


def _near_rows(
    right: pd.DataFrame, left_hp29: np.ndarray, radius_arcsec: float, left_order: int
) -> pd.DataFrame:
    """The right rows that can lie within ``radius_arcsec`` of left rows at these ``_healpix_29``:
    those in an order-m pixel that holds a left row or touches one (m: at most the margin order
    of the radius, whose pixels are wider than it, and 6 orders below the left partition's, so
    that a piece spans a few hundred of them). A piece of a split partition covers part of the
    right partitions it reads; the kernel then indexes only the right rows near it. Their order
    is kept (ties are broken by it)."""
    import cdshealpix

    from survey_engine.catalog.healpix import SPATIAL_INDEX_ORDER, margin_order_for_radius, sorted_unique

    if len(right) == 0 or len(left_hp29) == 0:
        return right
    m = min(margin_order_for_radius(radius_arcsec), left_order + 6)
    shift = 2 * (SPATIAL_INDEX_ORDER - m)
    own = sorted_unique(left_hp29 >> shift)
    around = cdshealpix.nested.neighbours(own.astype(np.uint64), m).astype(np.int64).ravel()
    near = sorted_unique(np.concatenate([own, around[around >= 0]]))
    rq = right.index.to_numpy() >> shift
    keep = near[np.minimum(np.searchsorted(near, rq), len(near) - 1)] == rq
    return right if keep.all() else right[keep]


MIN_PIECE_ROWS = 20_000  # below this a piece costs more in task overhead than it saves


def split_large_tasks(tasks: list[MatchTask], split_rows: int | None = None) -> list[MatchTask]:
    """Each task whose left partition holds more than ``split_rows`` rows as several tasks of at
    most about that many rows (row ranges of the same file, each against the same right
    partitions and margin), so that one outsized partition (a straggler: 10x the rows of the
    others) does not set the time of the whole run. In task order, the pieces of a partition in
    row order: their results, concatenated, are the partition's result row for row.

    ``split_rows=None`` (automatic): pieces of the median partition's rows (at least
    ``MIN_PIECE_ROWS``), for partitions of more than twice that; ``0``: no split. The pieces'
    boundaries come from the partition's ``_healpix_29`` column (read here, for those partitions
    only) and never fall between two rows of the same ``_healpix_29``, so each left row's matches
    stay in one piece, in the same order."""
    rows = [dict(t.file_rows).get(t.left_file) for t in tasks]
    known = [r for r in rows if r is not None]
    if split_rows == 0 or not known:
        return list(tasks)
    if split_rows is None:
        piece = max(int(np.median(known)), MIN_PIECE_ROWS)
        limit = 2 * piece
    else:
        piece = limit = int(split_rows)
    out: list[MatchTask] = []
    for task, n in zip(tasks, rows):
        if n is None or n <= limit or task.row_stop is not None:
            out.append(task)
            continue
        hp29 = read_partition(task.left_file, [SPATIAL_INDEX_COLUMN], expected_rows=n).index.to_numpy()
        if not bool(np.all(hp29[1:] >= hp29[:-1])):  # not sorted by _healpix_29: row order is not index order
            out.append(task)
            continue
        cuts = [0]
        for k in range(1, -(-n // piece)):
            cut = int(np.searchsorted(hp29, hp29[k * n // (-(-n // piece))], side="left"))
            if cut > cuts[-1]:
                cuts.append(cut)
        cuts.append(n)
        out += [replace(task, row_start=a, row_stop=b) for a, b in zip(cuts[:-1], cuts[1:])]
    return out


def whole_tasks(tasks: list[MatchTask]) -> list[MatchTask]:
    """``tasks`` with the pieces of each split partition (``split_large_tasks``) made one task again."""
    out: list[MatchTask] = []
    for task in tasks:
        if task.row_stop is None:
            out.append(task)
        elif task.row_start == 0:
            out.append(replace(task, row_start=None, row_stop=None))
    return out


def _assemble(left, right, li, ri, sep, p: MatchParams, meta: pd.DataFrame) -> pd.DataFrame:
    data = {
        name: values if rows is None else values.take(rows)
        for name, (values, rows) in _output_sources(left, right, li, ri, sep, p).items()
    }
    index = pd.Index(left.index.to_numpy()[li], name=SPATIAL_INDEX_COLUMN)
    frame = pd.DataFrame(data, index=index, copy=False)  # one block per column: no stacking copy
    if list(frame.columns) != list(meta.columns):
        frame = frame.reindex(columns=meta.columns)
    wrong = {c: t for c, t in meta.dtypes.items() if frame[c].dtype != t}
    return frame.astype(wrong) if wrong else frame


def _output_sources(left, right, li, ri, sep, p: MatchParams) -> dict[str, tuple]:
    """Each output column of the pairs (li, ri): its name, the values it is taken from and the rows
    to take (None: the values as they are). NumPy columns as arrays, others (strings, nullable) as
    pandas arrays, whose ``take`` keeps their dtype. ``right`` None: the left rows alone."""
    s1, s2 = p.suffixes

    def values(col: pd.Series):
        return col.to_numpy() if isinstance(col.dtype, np.dtype) else col.array

    out = {f"{c}{s1}": (values(left[c]), li) for c in left.columns}
    if right is not None:
        out.update({f"{c}{s2}": (values(right[c]), ri) for c in right.columns})
        out[f"{SPATIAL_INDEX_COLUMN}{s2}"] = (right.index.to_numpy(), ri)
        out["sep_arcsec"] = (np.asarray(sep), None)
    return out


def sorted_rows(out: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
    if len(out) == 0:
        return meta
    index = out.index.to_numpy()
    if bool(np.all(index[1:] > index[:-1])):
        return out  # strictly increasing: one row per index value, already in order
    order = np.lexsort((out["sep_arcsec"].to_numpy(dtype=float, na_value=np.inf), index))
    return out.iloc[order]
