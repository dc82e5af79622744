"""Job specs: a YAML file naming a source, a list of stages and where results go, validated
before anything runs. Errors name the file, the line and the key.

    name: photoz                       # optional; default: the file's name
    workdir: photoz-job                # outputs go here (relative to the working directory)
    source:                            # one of: mock, files, catalog, tap
      mock: {rows: 100000, seed: 42}
    stages:                            # run in order; each output is workdir/<id>
      - id: sky
        import: {max_rows: 20000, margin: 5}
      - id: model
        train: {task: photoz, catalog: sky, features: [u-g, g-r, r-i, i-z, r], target: redshift}
      - id: zphot
        predict: {model: model, catalog: sky}
    cluster: {workers: 2}              # optional: local workers, or address: tcp://host:port (min_workers: N waits for N)

Stage parameters that name another stage's output (``catalog``, ``model``, ``left``, ``right``)
must name an earlier stage (or ``source`` for a catalog source).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from survey_engine.errors import SurveyEngineError

# stage kind -> {parameter: (type(s), required, what it references or None)}
STAGES: dict[str, dict[str, tuple]] = {
    "import": {"source": (str, False, None), "max_rows": (int, False, None), "margin": ((int, float), False, None), "highest_order": (int, False, None),
               "ra": (str, False, None), "dec": (str, False, None), "id": (str, False, None)},
    "ingest": {"source": (str, False, None), "max_rows": (int, False, None), "margin": ((int, float), False, None)},
    "margin": {"catalog": (str, True, "catalog"), "radius": ((int, float), True, None)},
    "crossmatch": {"left": (str, True, "catalog"), "right": (str, True, "catalog"), "radius": ((int, float), True, None),
                   "how": (str, False, None), "k": (int, False, None), "join": (str, False, None), "self": (bool, False, None),
                   "min_radius": ((int, float), False, None), "suffixes": (list, False, None), "build_margin": (bool, False, None),
                   "algorithm": (str, False, None), "gpu": (bool, False, None)},
    "train": {"task": (str, True, None), "catalog": (str, True, "catalog"), "features": (list, True, None), "target": (str, False, None),
              "label": (str, False, None), "where": (str, False, None), "cv": (int, False, None), "search": (bool, False, None),
              "baselines": (bool, False, None), "gpu": (bool, False, None), "seed": (int, False, None), "ebv": (str, False, None),
              "missing": (str, False, None), "components": (int, False, None), "test_fraction": (float, False, None),
              "members": (int, False, None)},
    "features": {"catalog": (str, True, "catalog"), "features": (list, True, None), "ebv": (str, False, None),
                 "missing": (str, False, None), "keep": (list, False, None)},
    "predict": {"model": (str, True, "model"), "catalog": (str, True, "catalog")},
    "evaluate": {"model": (str, True, "model"), "catalog": (str, True, "catalog"), "truth": (str, False, None), "where": (str, False, None)},
    "cluster": {"catalog": (str, True, "catalog"), "features": (list, True, None), "method": (str, False, None), "id": (str, False, None),
                "min_cluster_size": (int, False, None), "min_samples": (int, False, None), "eps": ((int, float), False, None),
                "max_cluster_fraction": ((int, float), False, None), "n_clusters": (int, False, None)},
}
PRODUCES = {"import": "catalog", "ingest": "catalog", "margin": "catalog", "crossmatch": "catalog", "train": "model", "features": "catalog",
            "predict": "catalog", "evaluate": "report", "cluster": "catalog"}
SOURCES = {
    "mock": {"rows": (int, True, None), "seed": (int, False, None)},
    "files": {"paths": (list, True, None), "ra": (str, False, None), "dec": (str, False, None), "id": (str, False, None)},
    "catalog": {"path": (str, True, None)},
    "tap": {"url": (str, True, None), "table": (str, True, None), "columns": (list, False, None), "where": (str, False, None),
            "ra": (str, False, None), "dec": (str, False, None), "id": (str, False, None), "order": (int, False, None),
            "page_rows": (int, False, None), "pages_in_flight": (int, False, None), "paging": (str, False, None),
            "workers": (int, False, None)},  # deprecated name of pages_in_flight (said when loaded)
}
TOP = {"name": str, "workdir": str, "source": dict, "sources": dict, "stages": list, "cluster": dict, "description": str}
CLUSTER_KEYS = {"workers": int, "address": str, "kind": str, "config": str, "min_workers": int}


class JobSpecError(SurveyEngineError, ValueError):
    """A job spec that cannot run; the message names the file, line and key."""


@dataclass
class Stage:
    id: str
    kind: str
    params: dict
    line: int


@dataclass
class JobSpec:
    path: Path
    name: str
    workdir: Path
    source_kind: str
    source: dict
    stages: list[Stage]
    cluster: dict = field(default_factory=dict)
    text: str = ""
    sources: dict = field(default_factory=dict)  # name -> (kind, params); relative paths resolved


def load_spec(path: str | Path, base: Path | None = None) -> JobSpec:
    """Read and validate a job spec; relative workdirs resolve against ``base`` (default: cwd)."""
    path = Path(path)
    if not path.exists():
        raise JobSpecError(f"{path}: no such job spec")
    text = path.read_text()
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise JobSpecError(f"{path}{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(root, yaml.MappingNode):
        raise JobSpecError(f"{path}:1: a job spec is a mapping with source, stages, ...")
    err = _Errors(path)
    top = _mapping(root, err, "job")
    for key, (knode, _) in top.items():
        if key not in TOP:
            err.add(knode, f"unknown key {key!r} (known: {', '.join(TOP)})")
    data = yaml.safe_load(text)
    for key, typ in TOP.items():
        if key in data and not isinstance(data[key], typ):
            err.add(top[key][0], f"{key!r} must be a {typ.__name__}")
    if "stages" not in data:
        err.add(root, "missing 'stages'")
    if "source" not in data and "sources" not in data:
        err.add(root, "missing 'source'")
    err.raise_if_any()

    # sources: `source: {kind: ...}` (named "source"), or `sources: {name: {kind: ...}, ...}`
    if ("source" in top) == ("sources" in top):
        err.add(root, "give either 'source' (one input) or 'sources' (several, by name)")
        err.raise_if_any()
    if "source" in top:
        named = {"source": (top["source"][0], top["source"][1], data["source"])}
    else:
        snodes_map = _mapping(top["sources"][1], err, "sources")
        named = {name: (k, v, data["sources"][name]) for name, (k, v) in snodes_map.items()}
    sources: dict[str, tuple[str, dict]] = {}
    for sname, (_, snode, sdata) in named.items():
        label = "source" if sname == "source" else f"sources.{sname}"
        smap = _mapping(snode, err, label)
        if len(smap) != 1:
            err.add(snode, f"{label} must have exactly one of {', '.join(SOURCES)}")
            continue
        kind, (sk_node, sv_node) = next(iter(smap.items()))
        if kind not in SOURCES:
            err.add(sk_node, f"{label}: unknown source {kind!r} (known: {', '.join(SOURCES)})")
            continue
        params = sdata[kind]
        if kind == "files" and isinstance(params, list):
            params = {"paths": params}
        elif kind == "catalog" and isinstance(params, str):
            params = {"path": params}
        elif isinstance(params, dict):
            _check_params(err, sv_node, params, SOURCES[kind], f"{label}.{kind}")
            if kind == "tap" and "workers" in params:
                params = _renamed_tap_workers(err, sv_node, params, f"{path}: {label}.tap")
        else:
            err.add(sv_node, f"{label}.{kind} must be a mapping")
            continue
        if kind == "files":
            for p in params.get("paths", []):
                if not Path(p).exists() and not (path.parent / p).exists():
                    err.add(sv_node, f"{label}.files: {p} does not exist")
            params = {**params, "paths": [str(p if Path(p).is_absolute() or Path(p).exists() else path.parent / p) for p in params.get("paths", [])]}
        if kind == "catalog":
            p = params.get("path", "")
            if not (Path(p).exists() or (path.parent / p).exists()):
                err.add(sv_node, f"{label}.catalog: {p} does not exist")
            params = {**params, "path": str(p if Path(p).is_absolute() or Path(p).exists() else path.parent / p)}
        sources[sname] = (kind, params)
    err.raise_if_any()
    source_kind, source = next(iter(sources.values()))

    # stages
    produced = {n: "catalog" for n, (k, _) in sources.items() if k == "catalog"}
    stages: list[Stage] = []
    snodes = top["stages"][1]
    if not isinstance(snodes, yaml.SequenceNode) or not snodes.value:
        err.add(snodes, "stages must be a non-empty list")
        err.raise_if_any()
    for i, (node, raw) in enumerate(zip(snodes.value, data["stages"])):
        label = f"stages[{i}]"
        if not isinstance(raw, dict):
            err.add(node, f"{label} must be a mapping with an id and one stage kind")
            continue
        smap = _mapping(node, err, label)
        kinds = [k for k in raw if k != "id"]
        if "id" not in raw or not isinstance(raw["id"], str) or not raw["id"]:
            err.add(node, f"{label}: missing id (the name of its output)")
            continue
        sid = raw["id"]
        label = f"stage {sid!r}"
        if sid in produced:
            err.add(smap["id"][1], f"{label}: id used twice")
        if len(kinds) != 1 or kinds[0] not in STAGES:
            bad = [k for k in kinds if k not in STAGES]
            err.add(smap[bad[0]][0] if bad else node, f"{label}: needs exactly one stage kind of {', '.join(STAGES)}" + (f"; unknown {bad[0]!r}" if bad else ""))
            continue
        kind = kinds[0]
        params = raw[kind] or {}
        if not isinstance(params, dict):
            err.add(smap[kind][1], f"{label}: {kind} parameters must be a mapping")
            continue
        pnode = smap[kind][1]
        _check_params(err, pnode, params, STAGES[kind], f"{label} ({kind})")
        pmap = _mapping(pnode, err, label) if isinstance(pnode, yaml.MappingNode) else {}
        for pname, (_, _, ref) in STAGES[kind].items():
            if ref and pname in params and isinstance(params[pname], str):
                target = params[pname]
                if target not in produced:
                    err.add(pmap[pname][1], f"{label}: {pname}: {target!r} is not the output of an earlier stage (earlier: {', '.join(produced) or 'none'})")
                elif produced[target] != ref:
                    err.add(pmap[pname][1], f"{label}: {pname}: {target!r} is a {produced[target]}, not a {ref}")
        if kind in ("import", "ingest"):
            want = ("tap",) if kind == "ingest" else ("mock", "files")
            chosen = params.get("source")
            if chosen is None and len(sources) > 1:
                err.add(smap[kind][0], f"{label}: the job has several sources ({', '.join(sources)}); say which with source: NAME")
                continue
            chosen = chosen or next(iter(sources))
            if chosen not in sources:
                err.add(pmap.get("source", (pnode, pnode))[1], f"{label}: source {chosen!r} is not one of {', '.join(sources)}")
                continue
            if sources[chosen][0] not in want:
                err.add(smap[kind][0], f"{label}: {kind} needs a {' or '.join(want)} source; {chosen!r} is {sources[chosen][0]}")
        if kind == "train":
            task = params.get("task")
            if task not in ("photoz", "classify", "anomaly", "pca"):
                err.add(pmap.get("task", (pnode, pnode))[1], f"{label}: task must be photoz, classify, anomaly or pca, got {task!r}")
            if task == "photoz" and "target" not in params:
                err.add(pnode, f"{label}: photoz needs a target")
            if task == "classify" and "label" not in params:
                err.add(pnode, f"{label}: classify needs a label")
        produced[sid] = PRODUCES[kind]
        stages.append(Stage(sid, kind, params, node.start_mark.line + 1))
    cluster = data.get("cluster") or {}
    if isinstance(cluster, dict):
        cmap = _mapping(top["cluster"][1], err, "cluster") if "cluster" in top else {}
        for key, value in cluster.items():
            if key not in CLUSTER_KEYS:
                err.add(cmap[key][0], f"cluster: unknown key {key!r} (known: {', '.join(CLUSTER_KEYS)})")
            elif not isinstance(value, CLUSTER_KEYS[key]):
                err.add(cmap[key][1], f"cluster: {key} must be a {CLUSTER_KEYS[key].__name__}")
    err.raise_if_any()
    name = data.get("name") or path.stem
    base = base or Path.cwd()
    workdir = Path(data.get("workdir") or f"{name}-job")
    workdir = workdir if workdir.is_absolute() else base / workdir
    return JobSpec(path, name, workdir, source_kind, source, stages, cluster, text, sources)


class _Errors:
    def __init__(self, path: Path):
        self.path, self.items = path, []

    def add(self, node, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None and hasattr(node, "start_mark") else 1
        self.items.append(f"{self.path}:{line}: {message}")

    def raise_if_any(self) -> None:
        if self.items:
            raise JobSpecError("\n".join(self.items))


def _mapping(node, err: _Errors, label: str) -> dict:
    """key -> (key node, value node) of a YAML mapping node."""
    if not isinstance(node, yaml.MappingNode):
        err.add(node, f"{label} must be a mapping")
        return {}
    return {k.value: (k, v) for k, v in node.value}


def _renamed_tap_workers(err: _Errors, node, params: dict, label: str) -> dict:
    """The tap source's old key ``workers`` (pages in flight) read as ``pages_in_flight``, with a note:
    everywhere else ``workers`` means local Dask workers."""
    import sys

    if "pages_in_flight" in params:
        err.add(node, f"{label}: give pages_in_flight only (workers is its deprecated name)")
        return params
    print(f"{label}: the key 'workers' is deprecated here, it means pages in flight: "
          f"write 'pages_in_flight: {params['workers']}'", file=sys.stderr)
    return {**{k: v for k, v in params.items() if k != "workers"}, "pages_in_flight": params["workers"]}


def _check_params(err: _Errors, node, params: dict, allowed: dict, label: str) -> None:
    nodes = _mapping(node, err, label) if isinstance(node, yaml.MappingNode) else {}
    for key, value in params.items():
        knode, vnode = nodes.get(key, (node, node))
        if key not in allowed:
            err.add(knode, f"{label}: unknown key {key!r} (known: {', '.join(allowed)})")
            continue
        types = allowed[key][0]
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)))
        if not ok:
            names = "/".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
            err.add(vnode, f"{label}: {key} must be {names}, got {type(value).__name__} {value!r}")
    for key, (_, required, _) in allowed.items():
        if required and key not in params:
            err.add(node, f"{label}: missing required key {key!r}")
