"""Job specs are data: hostile stage ids and names are refused by ``run --check`` (naming the line
and key) and can never make a run write or remove outside its workdir; values are checked as the
stages would check them; duplicate YAML keys are refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from survey_engine.catalog.layout import UnsafePathError, check_inside, remove_tree, safe_child
from survey_engine.jobs.spec import JobSpecError, load_spec

BASE = """\
name: t
workdir: work
source:
  mock: {rows: 2000, seed: 1}
stages:
  - id: sky
    import: {max_rows: 500, margin: 5}
  - id: pairs
    crossmatch: {left: sky, right: sky, radius: 2}
"""


def victim(tmp_path: Path) -> Path:
    v = tmp_path / "victim"
    v.mkdir()
    (v / "precious.txt").write_text("keep me")
    return v


def untouched(v: Path) -> bool:
    return (
        sorted(p.name for p in v.iterdir()) == ["precious.txt"]
        and (v / "precious.txt").read_text() == "keep me"
    )


@pytest.mark.parametrize(
    "bad_id",
    ["../../victim", "../victim", "..", ".", "/abs/victim", "a/b", "", "has space", ".state", "..hidden"],
)
def test_hostile_stage_ids_are_refused_with_line_and_key(tmp_path, bad_id):
    v = victim(tmp_path)
    sub = tmp_path / "jobs"
    sub.mkdir()
    f = sub / "job.yaml"
    f.write_text(BASE.replace("- id: pairs", f"- id: {bad_id!r}").replace("- id: sky", "- id: sky"))
    with pytest.raises(JobSpecError) as info:
        load_spec(f, base=sub)
    message = str(info.value)
    assert f"{f}:8: " in message, message
    assert ("id" in message and "plain name" in message) or "missing id" in message, message
    assert untouched(v) and not (sub / "work").exists()


def test_run_check_refuses_a_hostile_id_exit_2(tmp_path):
    v = victim(tmp_path)
    f = tmp_path / "job.yaml"
    f.write_text(BASE.replace("- id: pairs", "- id: ../victim"))
    run = subprocess.run(
        [sys.executable, "-m", "survey_engine.cli", "run", str(f), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert run.returncode == 2, run.stderr
    assert f"{f}:8:" in run.stderr and "'../victim'" in run.stderr and "Traceback" not in run.stderr
    assert untouched(v)


@pytest.mark.parametrize(
    "text, line, message",
    [
        (BASE.replace("radius: 2}", "radius: -1}"), 9, "radius must be > 0, got -1"),
        (BASE.replace("radius: 2}", "radius: 0}"), 9, "radius must be > 0, got 0"),
        (BASE.replace("rows: 2000", "rows: -5"), 4, "rows must be >= 1, got -5"),
        (BASE.replace("max_rows: 500", "max_rows: 0"), 7, "max_rows must be >= 1, got 0"),
        (BASE.replace("margin: 5}", "margin: -3}"), 7, "margin must be >= 0, got -3"),
        (
            BASE.replace("radius: 2}", "radius: 2, how: closest}"),
            9,
            "how must be one of nearest, knn, all, one-to-one",
        ),
        (BASE.replace("radius: 2}", "radius: 2, k: 0}"), 9, "k must be >= 1, got 0"),
        (
            BASE.replace("radius: 2}", "radius: 2, min_radius: 3}"),
            9,
            "min_radius 3 must be smaller than radius 2",
        ),
        (BASE.replace("radius: 2}", "radius: 2, join: full}"), 9, "join must be one of inner, left, outer"),
        (BASE.replace("name: t", "name: ../t"), 1, "name (the job's name) '../t' is not a plain name"),
        (BASE + "cluster: {workers: 0}\n", 10, "cluster: workers must be >= 1, got 0"),
        (
            BASE.replace(
                "    import: {max_rows: 500, margin: 5}",
                "    import: {max_rows: 500, margin: 5}\n    import: {max_rows: 9}",
            ),
            8,
            "key 'import' given twice (also on line 7)",
        ),
        (BASE.replace("name: t", "name: t\nname: u"), 2, "key 'name' given twice (also on line 1)"),
        (
            BASE.replace("{max_rows: 500, margin: 5}", "{max_rows: 500, margin: 5, max_rows: 7}"),
            7,
            "key 'max_rows' given twice",
        ),
    ],
)
def test_check_validates_values_as_the_stages_would(tmp_path, text, line, message):
    f = tmp_path / "job.yaml"
    f.write_text(text)
    with pytest.raises(JobSpecError) as info:
        load_spec(f, base=tmp_path)
    assert f"{f}:{line}: " in str(info.value) and message in str(info.value), str(info.value)


def test_hostile_source_names_are_refused(tmp_path):
    f = tmp_path / "job.yaml"
    f.write_text(
        BASE.replace(
            "source:\n  mock: {rows: 2000, seed: 1}", "sources:\n  ../../victim: {mock: {rows: 10}}"
        ).replace("import: {max_rows", "import: {source: ../../victim, max_rows")
    )
    with pytest.raises(
        JobSpecError, match=r"job.yaml:4: sources: name '\.\./\.\./victim' is not a plain name"
    ):
        load_spec(f, base=tmp_path)


def test_safe_child_and_remove_tree_never_reach_outside(tmp_path):
    v = victim(tmp_path)
    root = tmp_path / "work"
    root.mkdir()
    for bad in ("../victim", "..", "/tmp", "a/../../victim", ""):
        with pytest.raises(UnsafePathError):
            safe_child(root, bad)
    for bad in (root / ".." / "victim", v, root, tmp_path):
        with pytest.raises(UnsafePathError, match="not inside"):
            remove_tree(bad, root)
    (root / "link").symlink_to(v, target_is_directory=True)  # a link inside pointing out: only the link goes
    remove_tree(root / "link", root)
    assert not (root / "link").exists() and untouched(v)
    (root / "sub").mkdir()
    (root / "sub" / "x").write_text("x")
    remove_tree(root / "sub", root)
    assert not (root / "sub").exists()
    with pytest.raises(UnsafePathError):
        check_inside(root / "link2" / ".." / ".." / "victim", root)
