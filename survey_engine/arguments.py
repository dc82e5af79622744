"""How a stage declares its arguments once: each field of a stage's Arguments dataclass carries its
public name, default, help text, type and check, and every door is built from that declaration.

    @dataclass
    class MarginArguments:
        catalog: str = param(help="a catalog or collection folder", role="positional", ref="catalog")
        radius: float = param(help="margin radius in arcsec", type=float, check=POSITIVE)

The public name (``name=``, default: the field's name) is the CLI's argument name (``--name`` with
``_`` as ``-``, argparse's dest), the job spec's YAML key and the Python API's keyword. A field
whose public value differs from what the stage needs (``--token-env`` names a variable, the
stage needs the token) says so with ``convert=``. ``survey_engine.registry`` maps stage kinds to
these classes; ``cli.py``, ``jobs/spec.py``, ``jobs/run.py`` and ``api.py`` read it.

This module is at the floor: it imports nothing from the package but ``errors``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import MISSING, dataclass
from typing import Any

KEY = "survey_engine.param"
NAME_LIST = (
    "names"  # a list of names: comma-separated on the command line, a YAML list, a Python list or string
)
NUMBER_OR_NAME = "number_or_name"  # a number (e.g. an epoch) or the name of a column


@dataclass(frozen=True)
class Param:
    """The public face of one field of a stage's Arguments."""

    help: str
    name: str | None = None  # public name; None: the field's name
    type: Any = str  # str, int, float, bool, NAME_LIST, NUMBER_OR_NAME
    role: str = "option"  # option | positional | output
    public_default: Any = None  # used when has_public_default; the public default, where it differs from the field's (with convert)
    required: bool = False
    choices: tuple | None = None
    check: tuple[Callable[[Any], bool], str] | None = None  # (test, what the value must be)
    ref: str | None = None  # in a job spec the value names an earlier output: catalog | model | source
    flags: tuple[str, ...] = ()  # CLI spellings; default ("--public-name",)
    nargs: str | None = None  # "+" / "*": several CLI values (a list)
    metavar: str | None = None
    yaml: str | None = ""  # the YAML key; "" = the public name; None = not a job spec key (see job)
    job: str | None = (
        None  # where a job takes the value instead: output | output_file:NAME | stage_id | source
    )
    convert: Callable[[Any], Any] | None = None  # public value -> field value
    has_public_default: bool = False
    cli: bool = True  # False: not a command-line option (a Python-only knob)
    parse: Callable[[str], Any] | None = None  # how the CLI reads the text (default: from type)


def param(
    default: Any = MISSING,
    help: str = "",
    *,
    default_factory: Any = MISSING,
    repr: bool = True,
    kw_only: bool = False,
    **face: Any,
) -> Any:
    """A dataclass field with its public face (see ``Param``); ``default`` is the field's default."""
    if "public_default" in face:
        face["has_public_default"] = True
    meta = {KEY: Param(help=help, **face)}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta, repr=repr, kw_only=kw_only)
    return dataclasses.field(default=default, metadata=meta, repr=repr, kw_only=kw_only)


# checks shared by many stages: (test, what the value must be), as messages say it
POSITIVE = (lambda v: v > 0, "> 0")
AT_LEAST_1 = (lambda v: v >= 1, ">= 1")
NOT_NEGATIVE = (lambda v: v >= 0, ">= 0")
FRACTION = (lambda v: 0 < v < 1, "within (0, 1)")
NAMES = (
    lambda v: len(v) > 0 and all(isinstance(x, str) and x.strip() for x in v),
    "a non-empty list of names",
)


def positive_int(text: str) -> int:
    """A whole number >= 1 from the command line ("1e6" too); argparse shows the message."""
    import argparse

    try:
        value = int(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def within(low: float, high: float) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: low <= v <= high, f"within {low}..{high}")


@dataclass(frozen=True)
class Face:
    """One public argument: its field, its declaration and its public name and default."""

    field: str
    param: Param
    name: str
    default: Any  # MISSING when required

    @property
    def required(self) -> bool:
        return self.param.required or self.default is MISSING

    @property
    def yaml_key(self) -> str | None:
        if self.param.yaml is None:
            return None
        return self.param.yaml or self.name

    @property
    def flags(self) -> tuple[str, ...]:
        return self.param.flags or ("--" + self.name.replace("_", "-"),)


def faces(cls: type) -> list[Face]:
    """The public arguments of an Arguments dataclass, in declaration order."""
    out = []
    for f in dataclasses.fields(cls):
        p = f.metadata.get(KEY)
        if p is None:
            continue
        if p.has_public_default:
            default = p.public_default
        elif f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = MISSING
        out.append(Face(f.name, p, p.name or f.name, default))
    return out


def names(value: Any) -> list[str] | None:
    """A list of names from a comma-separated string or a list (``None`` stays ``None``)."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(v).strip() for v in items if str(v).strip()]


def public_values(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Every public argument of ``cls`` from the values one door gave (CLI, job spec or API):
    defaults filled in, comma-separated names made lists. Unknown or missing names are an error."""
    from survey_engine.errors import UsageError

    known = {face.name: face for face in faces(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise UsageError(
            f"{cls.__name__}: unknown argument(s) {', '.join(unknown)} (known: {', '.join(known)})"
        )
    out = {}
    for name, face in known.items():
        if name in values:
            value = values[name]
        elif face.default is not MISSING:
            value = face.default
        else:
            flag = face.flags[0] if face.param.role != "positional" else name.upper()
            raise UsageError(f"{cls.__name__}: missing {flag} ({name}= in Python)")
        if face.param.type == NAME_LIST and isinstance(value, str) and face.param.nargs is None:
            value = names(value)
        out[name] = value
    return out


def build(cls: type, values: dict[str, Any]) -> Any:
    """The Arguments ``cls`` from public values (see ``public_values``), ``convert`` applied."""
    full = public_values(cls, values)
    kwargs = {}
    for face in faces(cls):
        value = full[face.name]
        kwargs[face.field] = face.param.convert(value) if face.param.convert is not None else value
    return cls(**kwargs)


@dataclass
class StageResult:
    """What a stage's ``run`` returns: the line the CLI prints, the dict a job's summary keeps, the
    output's location and the stage's own result object (for the Python API)."""

    line: str
    info: dict = dataclasses.field(default_factory=dict)
    out: Any = None
    data: Any = None
    exit_code: int = 0
