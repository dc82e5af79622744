"""One writer at a time: a lock file beside an output while it is being written.

``OUT.lock`` is created atomically (``O_CREAT | O_EXCL``) and holds the writer's host, pid, start
time and command. A second writer to the same output stops at once with an error naming the
holder; a lock left by a writer that died (same host, pid no longer alive) is taken over with a
warning. Readers never look at locks: a finished catalog is only ever replaced by a rename.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from survey_engine.errors import SurveyEngineError
from survey_engine.redact import redact_text

LOCK_SUFFIX = ".lock"
_HELD: dict[
    Path, int
] = {}  # locks this process holds -> depth (an ingest holds OUT.lock, then imports into OUT)


class OutputLockedError(SurveyEngineError, RuntimeError):
    """Another writer holds the output; the message names it (host, pid, start, command)."""


def lock_path(out: str | Path) -> Path:
    out = Path(os.path.abspath(out))
    return out.with_name(out.name + LOCK_SUFFIX)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _describe(holder: dict) -> str:
    return (
        f"host {holder.get('host')}, pid {holder.get('pid')}, since {holder.get('started')}, "
        f"command: {holder.get('command')}"
    )


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # being written right now, or damaged: treated as held, never as stale


@contextlib.contextmanager
def output_lock(out: str | Path, command: str | None = None) -> Iterator[Path]:
    """Hold ``OUT.lock`` for the block; raise ``OutputLockedError`` if another writer holds it."""
    path = lock_path(out)
    if _HELD.get(path):  # this process already writes OUT (e.g. an ingest's own import): re-entered
        _HELD[path] += 1
        try:
            yield path
        finally:
            _HELD[path] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "command": redact_text(command or " ".join(sys.argv)),
        "token": uuid.uuid4().hex,
    }
    for attempt in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read(path)
            if holder is None:
                continue  # released in between: try again
            stale = (
                bool(holder)
                and holder.get("host") == me["host"]
                and isinstance(holder.get("pid"), int)
                and not _alive(holder["pid"])
            )
            if not stale:
                raise OutputLockedError(
                    f"{out}: another writer is writing it ({_describe(holder) if holder else 'lock being written'}); "
                    f"wait for it to finish (or remove {path} if that process is gone)"
                ) from None
            print(
                f"survey-engine: warning: {path}: taking over a stale lock of a writer that is gone ({_describe(holder)})",
                file=sys.stderr,
            )
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        break
    else:
        raise OutputLockedError(f"{out}: could not take the lock {path}; another writer keeps taking it")
    _HELD[path] = 1
    try:
        yield path
    finally:
        _HELD.pop(path, None)
        held = _read(path)
        if held and held.get("token") == me["token"]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
