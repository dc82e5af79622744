"""The ``survey-engine`` command line: one sub-command per entry of the registry
(``survey_engine.registry``), its flags generated from the stage's declared Arguments."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from survey_engine.arguments import NUMBER_OR_NAME, Face, faces, positive_int
from survey_engine.version import __version__

VERBOSE = "show distributed's INFO log lines and XGBoost's per-worker messages (hidden by default)"


def _number_or_name(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _add(parser: argparse.ArgumentParser, face: Face) -> None:
    """One declared argument as an argparse argument (dest = its public name)."""
    p = face.param
    kw: dict[str, Any] = {"help": p.help}
    if p.metavar:
        kw["metavar"] = p.metavar
    if p.role == "positional":
        if p.nargs:
            kw["nargs"] = p.nargs
        if p.choices:
            kw["choices"] = list(p.choices)
        if p.nargs in ("*", "?"):
            kw["default"] = face.default
        parser.add_argument(face.name, **kw)
        return
    kw["dest"] = face.name
    if p.type is bool:
        parser.add_argument(*face.flags, action="store_true", **kw)
        return
    if p.parse is not None:
        kw["type"] = p.parse
    elif p.type in (int, float):
        kw["type"] = p.type
    elif p.type == NUMBER_OR_NAME:
        kw["type"] = _number_or_name
    if p.nargs:
        kw["nargs"] = p.nargs
    if p.choices:
        kw["choices"] = list(p.choices)
    if face.required:
        kw["required"] = True
    else:
        kw["default"] = face.default
    parser.add_argument(*face.flags, **kw)


def build_parser() -> argparse.ArgumentParser:
    from survey_engine.commands import commands
    from survey_engine.registry import NO_PROGRESS, STORAGE_OPTIONS, WORKERS

    parser = argparse.ArgumentParser(
        prog="survey-engine", description="Distributed batch engine for astronomical survey catalogs."
    )
    parser.add_argument("--version", action="version", version=f"survey_engine {__version__}")
    parser.add_argument("--verbose", action="store_true", help=VERBOSE)
    sub = parser.add_subparsers(dest="command", required=True)
    for stage in commands().values():
        p = sub.add_parser(stage.kind, help=stage.help, description=stage.arguments.__doc__)
        for face in faces(stage.arguments):
            if face.param.cli:
                _add(p, face)
        if stage.cluster:
            extra = (
                "; they build the catalog from the pages (--dask-workers: the old name)"
                if len(stage.workers_flags) > 1
                else ""
            )
            p.add_argument(
                *stage.workers_flags, dest="workers", type=positive_int, default=None, help=WORKERS + extra
            )
        if stage.progress:
            p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
        if stage.storage:
            p.add_argument("--storage-options", default=None, metavar="JSON", help=STORAGE_OPTIONS)
        # --verbose also after the command (survey-engine train ... --verbose)
        p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if args.verbose:
        from survey_engine.runtime import set_verbose

        set_verbose(True)
    from survey_engine.errors import SurveyEngineError

    try:
        return _dispatch(args)
    except (SurveyEngineError, FileExistsError, FileNotFoundError, TimeoutError) as exc:
        print(f"survey-engine {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"survey-engine {args.command}: interrupted; re-run the same command to resume", file=sys.stderr
        )
        return 130
    except Exception as exc:  # the machine's trouble, not a bug: one line, the same exit as a user's error
        message = _environment_error(exc)
        if message is None:
            raise
        print(f"survey-engine {args.command}: error: {message}", file=sys.stderr)
        return 2


def _environment_error(exc: BaseException) -> str | None:
    """A one-line message for a full disk or a lost Dask scheduler (anything else: ``None``, a bug)."""
    import errno
    from asyncio import CancelledError

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing {exc.filename}" if exc.filename else ""
        return (
            f"no space left on the device{where} ({exc.strerror}); finished work is kept: free space and run the "
            "same command again to resume"
        )
    try:
        from distributed.comm.core import CommClosedError
    except ImportError:  # pragma: no cover - distributed is a base dependency
        CommClosedError = ConnectionError  # noqa: N806
    from concurrent.futures import CancelledError as FutureCancelled  # a future cancelled by a lost scheduler

    if isinstance(exc, CommClosedError | CancelledError | FutureCancelled | ConnectionError):
        return (
            f"lost the Dask scheduler or a connection to it ({type(exc).__name__}: {' '.join(str(exc).split())}); "
            "finished work is kept: "
            "run the same command again (on a working cluster) to resume"
        )
    return None


def command_values(arguments: type, args: argparse.Namespace) -> dict[str, Any]:
    """The public values of a command's declared arguments, as parsed from its flags."""
    return {face.name: getattr(args, face.name) for face in faces(arguments) if face.param.cli}


def _dispatch(args: argparse.Namespace) -> int:
    """Build the stage's Arguments from the parsed flags and run it (on a local Dask cluster when it needs one)."""
    import contextlib

    from survey_engine.arguments import build
    from survey_engine.catalog.storage import is_remote, storage_options_given
    from survey_engine.commands import commands

    stage = commands()[args.command]
    progress = not getattr(args, "no_progress", False)
    with contextlib.ExitStack() as stack:
        stack.enter_context(storage_options_given(getattr(args, "storage_options", None)))
        stage_args = build(stage.arguments, command_values(stage.arguments, args))
        # the lock first: a second writer to the same --out stops before starting a cluster (a remote
        # output has no local lock file: its upload is made safe for readers by remote_write)
        if stage.lock and not is_remote(stage_args.out):
            from survey_engine.catalog.lock import output_lock
            from survey_engine.redact import redact_text

            stack.enter_context(
                output_lock(stage_args.out, redact_text(" ".join([stage.kind, *sys.argv[2:]])))
            )
        client = None
        if stage.cluster:
            import survey_engine.runtime as runtime

            client = stack.enter_context(runtime.dask_client(n_workers=args.workers))
        result = stage.run(stage_args, client=client, progress=progress)
    if result.line:
        print(result.line)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
