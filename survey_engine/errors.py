"""The project's error kinds: one base class that the CLI turns into exit 2 and a one-line message.

A ``SurveyEngineError`` is a user's problem (bad input, a wrong option, a damaged file) and its
message names the file, column, row, key or flag. Anything else that escapes is a bug and is shown
with its traceback.
"""

from __future__ import annotations


class SurveyEngineError(Exception):
    """Base of every error the project raises on purpose; ``str(exc)`` is the one-line message."""


class UsageError(SurveyEngineError, ValueError):
    """An option or a combination of options that cannot work (names the CLI flag)."""


class MissingColumnError(SurveyEngineError, KeyError):
    """A column the command needs is not in the catalog or file (names the file and the columns).

    ``str()`` is the message itself (a plain ``KeyError`` would quote it)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class MissingExtraError(SurveyEngineError, ImportError):
    """An optional module is not installed; the message names the extra to install."""


def option(cli: str, python: str) -> str:
    """An option as a message names it for both kinds of reader: the CLI flag first, then the
    Python keyword, e.g. ``option("--build-margin", "build_margin=True")`` gives
    "--build-margin (build_margin=True in Python)"."""
    return f"{cli} ({python} in Python)"


def require(module: str, extra: str, purpose: str) -> object:
    """Import an optional module or raise a one-line ``MissingExtraError`` naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{purpose} needs the optional module {module!r} ({exc}); install it with: pip install 'survey_engine[{extra}]'"
        ) from None
