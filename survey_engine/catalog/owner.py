"""Which write a staging folder belongs to now, so that a task of an abandoned write never publishes
into the next write's folder.

A write that fails cancels its tasks, but a task already running on a worker of a live cluster (a
scheduler given by address, SLURM jobs) runs to its end. The next write into the same ``--out``
starts over in the same ``OUT.partial`` when its arguments differ, or resumes there: a late task
of the failed write would otherwise put its partition file (and done-marker) among the new
write's, where the new write would take it for its own (other arguments, other rows) or publish it
as a stray file. Each write stamps its staging folder with a fresh token (``claim``) and hands an
``Owner`` to its tasks; a task checks it before it creates anything there (``make_dirs``) and
again just before it renames a finished file into place (``publish``), and stops with
``AbandonedWriteError`` otherwise. A failed write does not give its folder up: until the next write
claims it, the failed write's late tasks still finish there, and what they and its finished tasks
left is kept or removed by the next write's own resume rules (its fingerprint), as before. The last
check and the rename are two steps (microseconds apart), and on a network file system that caches
attributes a worker on another host may read a stale token for a moment: a guard, not a lock.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from survey_engine.catalog.layout import atomic_write_text
from survey_engine.errors import SurveyEngineError

OWNER_FILE = ".owner"  # in a staging folder: the token of the write that owns it now
_CLAIMS: dict[str, Owner] = {}  # the claims this process made, by staging folder (``held``)


class AbandonedWriteError(SurveyEngineError, RuntimeError):
    """A task of a write that has failed or finished tried to write into a staging folder that is
    no longer its write's (another write owns it now, or it is gone): its result is dropped."""


@dataclass(frozen=True)
class Owner:
    """A write's claim on its staging folder, shipped with its tasks (a path and a token)."""

    staging: str
    token: str

    def check(self) -> None:
        """Raise ``AbandonedWriteError`` unless the staging folder still belongs to this write."""
        try:
            held = Path(self.staging, OWNER_FILE).read_text()
        except (FileNotFoundError, NotADirectoryError):
            held = None
        if held != self.token:
            raise AbandonedWriteError(
                f"{self.staging}: "
                + ("now belongs to another write" if held else "no longer exists (its write ended)")
                + "; this task's write was abandoned, so its output is dropped and nothing is written"
            )


def check(owner: Owner | None) -> None:
    """``owner.check()``, or nothing for a write without one (a folder this process owns alone)."""
    if owner is not None:
        owner.check()


def publish(tmp: str | Path, final: str | Path, owner: Owner | None) -> None:
    """Rename a finished temporary file into place if the write still owns its folder; otherwise
    remove the temporary and raise ``AbandonedWriteError``."""
    try:
        check(owner)
    except AbandonedWriteError:
        Path(tmp).unlink(missing_ok=True)
        raise
    os.replace(tmp, final)


def write_file(final: str | Path, write: Callable[[Path], object], owner: Owner | None) -> None:
    """Make ``final`` appear whole, and only while ``owner``'s write owns its staging folder: its
    folders made (``make_dirs``), ``write(tmp)`` fills a temporary no other writer uses, then
    ``publish``. The one way a task writes a file into a staging folder."""
    final = Path(final)
    make_dirs(final.parent, owner)
    tmp = unique_tmp(final)
    try:
        write(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    publish(tmp, final, owner)


def make_dirs(folder: str | Path, owner: Owner | None) -> None:
    """``folder`` and its parents, as ``mkdir(parents=True)``; with ``owner``, only the levels below
    its staging folder, which must still be its write's: a folder removed meanwhile (the next write
    starting over, or this one published) is not made again by a late task."""
    folder = Path(folder)
    if owner is None:
        folder.mkdir(parents=True, exist_ok=True)
        return
    owner.check()
    if folder.is_dir():  # the common case (every partition file after its folder's first): nothing to make
        return
    level, made = Path(owner.staging), []
    try:
        for part in folder.relative_to(level).parts:
            level = level / part
            try:
                level.mkdir()  # never its parents: the staging folder itself is never made here
                made.append(level)
            except FileExistsError:  # there already, or made by another task meanwhile
                pass
    except FileNotFoundError:
        owner.check()  # the staging folder went away meanwhile: say so
        raise
    try:
        owner.check()  # the folder changed hands meanwhile: take back what was made
    except AbandonedWriteError:
        for level in reversed(made):
            try:
                level.rmdir()
            except OSError:
                pass  # not empty: another write's files are in it now
        raise


def claim(staging: str | Path) -> Owner:
    """Make ``staging`` (an existing folder) this write's: a fresh token, written atomically, which
    every task of an earlier write into it will fail to match."""
    owner = Owner(str(staging), uuid.uuid4().hex)
    atomic_write_text(Path(staging, OWNER_FILE), owner.token)
    _CLAIMS[owner.staging] = owner
    return owner


def held(staging: str | Path) -> Owner:
    """The claim this process made on ``staging`` (``claim``), kept in memory: not read back from the
    folder, where another write's token may be by then (its tasks then stop, rather than take that
    write's claim for their own)."""
    try:
        return _CLAIMS[str(staging)]
    except KeyError:
        raise AbandonedWriteError(f"{staging}: this process holds no claim on it (claim it first)") from None


def release(staging: str | Path) -> None:
    """Give the folder up before it is published or removed: every task still running is refused."""
    _CLAIMS.pop(str(staging), None)
    Path(staging, OWNER_FILE).unlink(missing_ok=True)


def unique_tmp(final: str | Path) -> Path:
    """A temporary name beside ``final`` that no other writer uses (a process's threads, or a late
    task of an abandoned write writing the same partition): ``.NAME.tmp-PID-XXXXXXXX``, which
    ``build.remove_unfinished_files`` recognises."""
    final = Path(final)
    return final.with_name(f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
