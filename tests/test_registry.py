"""The registry (survey_engine/registry.py): each stage declared once, and every door built from it.

Walks every stage: each declared argument is a CLI argument, a job spec key (or supplied by the job
itself, for a stated reason) and a Python API keyword; the same values given through the command
line and through a job spec build the same public values, hence the same Arguments."""

from __future__ import annotations

import argparse
import ast
import inspect
from pathlib import Path

import pytest

from survey_engine import api
from survey_engine.arguments import NAME_LIST, NUMBER_OR_NAME, build, faces, public_values
from survey_engine.cli import build_parser, command_values
from survey_engine.commands import commands
from survey_engine.jobs import spec as jobspec
from survey_engine.jobs.run import stage_values
from survey_engine.registry import job_stages, runtime_names, stages
from tests.conftest import REPO

PACKAGE = REPO / "survey_engine"


def _commands() -> dict[str, argparse.ArgumentParser]:
    return next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_the_cli_has_exactly_the_registry_commands_and_their_declared_arguments():
    parsers = _commands()
    assert list(parsers) == list(commands()) and set(stages()) < set(commands())
    for kind, stage in commands().items():
        dests = {a.dest for a in parsers[kind]._actions} - {"help", "verbose"}
        declared = {f.name for f in faces(stage.arguments) if f.param.cli}
        assert dests == declared | set(runtime_names(stage)), kind


def test_cli_is_a_loop_over_the_registry():
    """No sub-command is written out in cli.py: one add_parser call, inside the loop."""
    tree = ast.parse((PACKAGE / "cli.py").read_text())
    calls = [
        n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "add_parser"
    ]
    assert len(calls) == 1 and not isinstance(calls[0].args[0], ast.Constant)
    kinds = set(commands())
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert not (kinds - {"run"}) & strings, sorted((kinds - {"run"}) & strings)


def test_every_job_stage_argument_is_reachable_from_a_job_spec():
    for kind, stage in job_stages().items():
        for face in faces(stage.arguments):
            job = face.param.job
            where = f"{kind}.{face.name}"
            if face.yaml_key is None:  # the job supplies it, for a stated reason
                assert job in ("output", "stage_id", "source") or job.startswith("output_file:"), where
            elif job == "source":  # read from the stage's source (a tap source)
                assert face.yaml_key in jobspec.SOURCES["tap"], where
            else:
                assert face.yaml_key in jobspec.STAGES[kind], where
        # and nothing in the job spec that is not declared (but the job's own keys)
        declared = {f.yaml_key for f in faces(stage.arguments) if f.yaml_key}
        assert set(jobspec.STAGES[kind]) - declared <= set(jobspec.JOB_KEYS.get(kind, {})), kind


def test_every_command_with_a_python_function_takes_its_cli_arguments():
    commands = _commands()
    for kind, name in api.CONTRACT.items():
        params = set(inspect.signature(getattr(api, name)).parameters) - {"client"}
        dests = {a.dest for a in commands[kind]._actions} - {"help", "verbose"}
        assert params == dests, name


def _sample(face):
    """A value for every declared argument, other than its default, and valid."""
    p = face.param
    if p.choices:
        return next(c for c in reversed(p.choices) if c != face.default)
    if p.type is bool:
        return True
    if p.type is int:
        return 3
    if p.type is float:
        return 0.5 if p.check and p.check[1].startswith("within") else 2.5
    if p.type == NAME_LIST:
        return ["a1", "b2"]
    if p.type == NUMBER_OR_NAME:
        return "epoch_col"
    return "x_value"


def _cli_text(face, value) -> list[str]:
    if face.param.type is bool:
        return [face.flags[0]] if value else []
    text = ",".join(value) if isinstance(value, list) and not face.param.nargs else value
    items = [str(v) for v in text] if isinstance(text, list) else [str(text)]
    return items if face.param.role == "positional" else [face.flags[0], *items]


@pytest.mark.parametrize("kind", sorted(job_stages()))
def test_cli_and_job_spec_give_the_same_values(kind, tmp_path):
    """Every option a stage declares, set to a non-default value through both doors: the command
    line and a job spec stage produce the same public values (and so, through the one ``build``,
    the same Arguments)."""
    stage = stages()[kind]
    outputs = {"earlier": (tmp_path / "earlier", "fp"), "src": ([str(tmp_path / "d1.csv")], "fp")}
    tmp = tmp_path / "staging"
    yaml_params, argv = {}, [kind]
    for face in faces(stage.arguments):
        value = _sample(face)
        if face.param.ref in ("catalog", "model"):
            yaml_value, value = "earlier", str(tmp_path / "earlier")
        elif face.param.ref == "source":
            yaml_value, value = "src", [str(tmp_path / "d1.csv")]
        else:
            yaml_value = value
        if face.param.job == "output":
            value = str(tmp)
        elif face.param.job and face.param.job.startswith("output_file:"):
            value = str(tmp / face.param.job.split(":", 1)[1])
        elif face.param.job == "stage_id":
            value = "st"
        elif face.param.job == "source":
            if face.yaml_key is None:
                value = [str(tmp_path / "d1.csv")]
            yaml_value = None  # the source gives it
        if yaml_value is not None and face.yaml_key:
            yaml_params[face.yaml_key] = yaml_value
        argv += _cli_text(face, value)
    if kind in ("import", "ingest"):
        source = {"src": [str(tmp_path / "d1.csv")]} if kind == "import" else {}
        if kind == "ingest":  # the tap source holds the same sample values
            tap = {
                f.yaml_key: _sample(f)
                for f in faces(stage.arguments)
                if f.param.job == "source" and f.yaml_key
            }
            source = {"src": tap}
        outputs.update({k: (v, "fp") for k, v in source.items()})
        yaml_params.update({"_source_name": "src", "_source_kind": "files" if kind == "import" else "tap"})
    job_stage = jobspec.Stage("st", kind, yaml_params, 1)
    from_yaml = stage_values(job_stage, yaml_params, outputs, tmp)
    from_cli = command_values(stage.arguments, build_parser().parse_args(argv))
    if kind == "import":
        from_yaml.pop("id")  # the job's default id column for mock sources; given here as --id on the CLI
        from_cli.pop("id")
    assert public_values(stage.arguments, from_yaml) == public_values(stage.arguments, from_cli)


def test_build_fills_defaults_and_names_unknown_arguments():
    from survey_engine.crossmatch.arguments import CrossmatchArguments
    from survey_engine.errors import UsageError

    args = build(CrossmatchArguments, {"left": "a", "right": "b", "radius": 1.0, "out": "o"})
    assert args.suffixes == ("_1", "_2") and args.pm_columns == ("pmra", "pmdec") and args.how == "nearest"
    with pytest.raises(UsageError, match="unknown argument.*colour"):
        build(CrossmatchArguments, {"left": "a", "right": "b", "radius": 1.0, "out": "o", "colour": "red"})
    with pytest.raises(UsageError, match="--suffixes takes two"):
        build(CrossmatchArguments, {"left": "a", "right": "b", "radius": 1.0, "out": "o", "suffixes": "_x"})


def _imports(path: Path) -> set[str]:
    """Every survey_engine module a file imports (at any depth of the file)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("survey_engine"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("survey_engine")}
    return found


FLOOR_MAY_IMPORT = (
    "survey_engine.catalog",
    "survey_engine.errors",
    "survey_engine.arguments",
    "survey_engine.redact",
    "survey_engine.runtime",
    "survey_engine.version",
)


def test_the_floor_imports_nothing_above_it():
    """catalog/ (and the small top-level modules it uses) import no stage above them."""
    files = [
        *sorted((PACKAGE / "catalog").glob("*.py")),
        *(PACKAGE / f"{m}.py" for m in ("errors", "arguments", "redact", "runtime")),
    ]
    for f in files:
        above = {m for m in _imports(f) if m != "survey_engine" and not m.startswith(FLOOR_MAY_IMPORT)}
        assert not above, f"{f.relative_to(REPO)} imports {sorted(above)}"


def test_no_module_imports_another_modules_private_names():
    bad = []
    for f in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("survey_engine"):
                bad += [
                    f"{f.relative_to(REPO)}: {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
    assert bad == []
