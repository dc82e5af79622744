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
    # a mock source may be one of two surveys of the same mock sky: mock: {rows: N, survey: astrometric|photometric}
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
                   "algorithm": (str, False, None), "gpu": (bool, False, None), "epoch": ((int, float), False, None),
                   "left_epoch": ((int, float, str), False, None), "right_epoch": ((int, float, str), False, None),
                   "pm_columns": (list, False, None)},
    "train": {"task": (str, True, None), "catalog": (str, True, "catalog"), "features": (list, True, None), "target": (str, False, None),
              "label": (str, False, None), "where": (str, False, None), "cv": (int, False, None), "search": (bool, False, None),
              "baselines": (bool, False, None), "gpu": (bool, False, None), "seed": (int, False, None), "ebv": (str, False, None),
              "missing": (str, False, None), "components": (int, False, None), "test_fraction": (float, False, None),
              "members": (int, False, None), "rounds": (int, False, None), "eta": ((int, float), False, None),
              "mag_column": (str, False, None), "no_refit": (bool, False, None)},
    "features": {"catalog": (str, True, "catalog"), "features": (list, True, None), "ebv": (str, False, None),
                 "missing": (str, False, None), "keep": (list, False, None)},
    "predict": {"model": (str, True, "model"), "catalog": (str, True, "catalog"), "missing": (str, False, None)},
    "evaluate": {"model": (str, True, "model"), "catalog": (str, True, "catalog"), "truth": (str, False, None), "where": (str, False, None)},
    "lightcurves": {"objects": (str, True, "catalog"), "detections": (str, True, None), "id": (str, False, None),
                    "object_id": (str, False, None), "time": (str, False, None), "mag": (str, False, None),
                    "err": (str, False, None), "band": (str, False, None), "keep": (list, False, None),
                    "lc_column": (str, False, None), "require_objects": (bool, False, None)},
    "variability": {"catalog": (str, True, "catalog"), "bands": (list, False, None), "min_epochs": (int, False, None),
                    "min_period": ((int, float), False, None), "max_period": ((int, float), False, None),
                    "lc_column": (str, False, None)},
    "cluster": {"catalog": (str, True, "catalog"), "features": (list, True, None), "method": (str, False, None), "id": (str, False, None),
                "min_cluster_size": (int, False, None), "min_samples": (int, False, None), "eps": ((int, float), False, None),
                "max_cluster_fraction": ((int, float), False, None), "n_clusters": (int, False, None), "where": (str, False, None)},
}
PRODUCES = {"import": "catalog", "ingest": "catalog", "margin": "catalog", "crossmatch": "catalog", "train": "model", "features": "catalog",
            "predict": "catalog", "evaluate": "report", "cluster": "catalog", "lightcurves": "catalog", "variability": "catalog"}
SOURCES = {
    "mock": {"rows": (int, True, None), "seed": (int, False, None), "survey": (str, False, None)},
    "mock_lightcurves": {"objects": (int, True, None), "seed": (int, False, None), "cadence": (str, False, None)},
    "files": {"paths": (list, True, None), "ra": (str, False, None), "dec": (str, False, None), "id": (str, False, None)},
    "catalog": {"path": (str, True, None)},
    "tap": {"url": (str, True, None), "table": (str, True, None), "columns": (list, False, None), "where": (str, False, None),
            "ra": (str, False, None), "dec": (str, False, None), "id": (str, False, None), "order": (int, False, None),
            "page_rows": (int, False, None), "pages_in_flight": (int, False, None), "paging": (str, False, None),
            "workers": (int, False, None)},  # deprecated name of pages_in_flight (said when loaded)
}
MOCK_SURVEYS = ("sky", "astrometric", "photometric")  # survey_engine.mock.surveys.SURVEYS
TOP = {"name": str, "workdir": str, "source": dict, "sources": dict, "stages": list, "cluster": dict, "description": str}
CLUSTER_KEYS = {"workers": int, "address": str, "kind": str, "config": str, "min_workers": int}


# values checked as the stages would check them (kind or "source.KIND" or "cluster", key) -> (test, what it must be)
_POSITIVE = (lambda v: v > 0, "> 0")
_AT_LEAST_1 = (lambda v: v >= 1, ">= 1")
_NOT_NEGATIVE = (lambda v: v >= 0, ">= 0")
_FRACTION = (lambda v: 0 < v < 1, "within (0, 1)")
_STRINGS = (lambda v: len(v) > 0 and all(isinstance(x, str) and x.strip() for x in v), "a non-empty list of names")


def _one_of(*choices):
    return (lambda v: v in choices, f"one of {', '.join(choices)}")


VALUES: dict[tuple[str, str], tuple] = {
    ("import", "max_rows"): _AT_LEAST_1, ("import", "margin"): _NOT_NEGATIVE, ("import", "highest_order"): (lambda v: 0 <= v <= 13, "within 0..13"),
    ("ingest", "max_rows"): _AT_LEAST_1, ("ingest", "margin"): _NOT_NEGATIVE,
    ("margin", "radius"): _POSITIVE,
    ("crossmatch", "radius"): _POSITIVE, ("crossmatch", "k"): _AT_LEAST_1, ("crossmatch", "min_radius"): _NOT_NEGATIVE,
    ("crossmatch", "how"): _one_of("nearest", "knn", "all", "one-to-one"), ("crossmatch", "join"): _one_of("inner", "left", "outer"),
    ("crossmatch", "algorithm"): _one_of("zones", "kdtree", "grid", "gpu"),  # crossmatch.algorithms.ALGORITHMS
    ("crossmatch", "suffixes"): (lambda v: len(v) == 2 and all(isinstance(x, str) for x in v) and v[0] != v[1], "two different strings"),
    ("train", "features"): _STRINGS, ("train", "cv"): (lambda v: v == 0 or v >= 2, "0 or >= 2"), ("train", "members"): _AT_LEAST_1,
    ("train", "components"): _AT_LEAST_1, ("train", "test_fraction"): _FRACTION, ("train", "missing"): _one_of("nan", "impute", "drop"),
    ("features", "features"): _STRINGS, ("features", "missing"): _one_of("nan", "impute", "drop"),
    ("cluster", "features"): _STRINGS, ("cluster", "method"): _one_of("kmeans", "dbscan", "hdbscan"),
    ("cluster", "min_cluster_size"): (lambda v: v >= 2, ">= 2"), ("cluster", "min_samples"): _AT_LEAST_1, ("cluster", "eps"): _POSITIVE,
    ("cluster", "max_cluster_fraction"): (lambda v: 0 < v <= 1, "within (0, 1]"), ("cluster", "n_clusters"): _AT_LEAST_1,
    ("source.mock", "rows"): _AT_LEAST_1, ("source.files", "paths"): _STRINGS, ("source.tap", "page_rows"): _AT_LEAST_1,
    ("source.tap", "workers"): _AT_LEAST_1, ("source.tap", "order"): (lambda v: 0 <= v <= 12, "within 0..12"),
    ("source.tap", "paging"): _one_of("auto", "healpix", "contains", "id", "keyset"), ("source.tap", "columns"): _STRINGS,
    ("cluster", "workers"): _AT_LEAST_1, ("cluster", "min_workers"): _AT_LEAST_1,
}


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
    description: str = ""


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
    _duplicate_keys(root, err)  # YAML keeps the last of two equal keys without a word: refuse them
    err.raise_if_any()
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
        for name, (knode, _, _) in named.items():
            _plain_name(err, knode, name, "sources: name")
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
            _check_params(err, sv_node, params, SOURCES[kind], f"{label}.{kind}", f"source.{kind}")
            if kind == "tap" and "workers" in params:
                params = _renamed_tap_workers(err, sv_node, params, f"{path}: {label}.tap")
        else:
            err.add(sv_node, f"{label}.{kind} must be a mapping")
            continue
        if kind == "mock" and params.get("survey", "sky") not in MOCK_SURVEYS:
            err.add(sv_node, f"{label}.mock: survey must be one of {', '.join(MOCK_SURVEYS)}, got {params['survey']!r}")
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
        if not _plain_name(err, smap["id"][1], sid, f"stages[{i}]: id (the name of its output folder)"):
            continue
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
        _check_params(err, pnode, params, STAGES[kind], f"{label} ({kind})", kind)
        if kind == "crossmatch" and _number(params.get("radius")) and _number(params.get("min_radius")) \
                and params["min_radius"] >= params["radius"] > 0:
            pm = _mapping(pnode, err, label)
            err.add(pm["min_radius"][1], f"{label} ({kind}): min_radius {params['min_radius']} must be smaller than radius {params['radius']}")
        pmap = _mapping(pnode, err, label) if isinstance(pnode, yaml.MappingNode) else {}
        for pname, (_, _, ref) in STAGES[kind].items():
            if ref and pname in params and isinstance(params[pname], str):
                target = params[pname]
                if target not in produced:
                    err.add(pmap[pname][1], f"{label}: {pname}: {target!r} is not the output of an earlier stage (earlier: {', '.join(produced) or 'none'})")
                elif produced[target] != ref:
                    err.add(pmap[pname][1], f"{label}: {pname}: {target!r} is a {produced[target]}, not a {ref}")
        if kind in ("import", "ingest"):
            want = ("tap",) if kind == "ingest" else ("mock", "files", "mock_lightcurves")
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
        if kind == "lightcurves" and isinstance(params.get("detections"), str):
            det = params["detections"]
            if det not in sources or sources[det][0] not in ("files", "mock_lightcurves"):
                err.add(pmap.get("detections", (pnode, pnode))[1],
                        f"{label}: detections: {det!r} is not a files or mock_lightcurves source (sources: {', '.join(sources)})")
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
            elif not isinstance(value, CLUSTER_KEYS[key]) or isinstance(value, bool):
                err.add(cmap[key][1], f"cluster: {key} must be a {CLUSTER_KEYS[key].__name__}")
            elif ("cluster", key) in VALUES and not VALUES[("cluster", key)][0](value):
                err.add(cmap[key][1], f"cluster: {key} must be {VALUES[('cluster', key)][1]}, got {value!r}")
    if "name" in top and isinstance(data.get("name"), str):
        _plain_name(err, top["name"][1], data["name"], "name (the job's name)")
    err.raise_if_any()
    name = data.get("name") or path.stem
    base = base or Path.cwd()
    workdir = Path(data.get("workdir") or f"{name}-job")
    workdir = workdir if workdir.is_absolute() else base / workdir
    return JobSpec(path, name, workdir, source_kind, source, stages, cluster, text, sources, data.get("description") or "")


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


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _plain_name(err: _Errors, node, name, label: str) -> bool:
    """Whether ``name`` is a plain name (it becomes a folder in the workdir); an error if not."""
    from survey_engine.catalog.layout import UnsafePathError, check_name

    try:
        check_name(name, label)
        return True
    except UnsafePathError as exc:
        err.add(node, str(exc))
        return False


def _duplicate_keys(node, err: _Errors, seen_nodes: set | None = None) -> None:
    """An error for every key given twice in one mapping, anywhere in the document."""
    seen_nodes = set() if seen_nodes is None else seen_nodes
    if id(node) in seen_nodes:  # anchors and aliases share nodes
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: dict = {}
        for knode, vnode in node.value:
            if isinstance(knode, yaml.ScalarNode):
                if knode.value in keys:
                    err.add(knode, f"key {knode.value!r} given twice (also on line {keys[knode.value]}); YAML would keep only the last")
                else:
                    keys[knode.value] = knode.start_mark.line + 1
            _duplicate_keys(vnode, err, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _duplicate_keys(item, err, seen_nodes)


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


def _check_params(err: _Errors, node, params: dict, allowed: dict, label: str, kind: str | None = None) -> None:
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
            continue
        test = VALUES.get((kind, key))
        if test is not None and not test[0](value):
            err.add(vnode, f"{label}: {key} must be {test[1]}, got {value!r}")
    for key, (_, required, _) in allowed.items():
        if required and key not in params:
            err.add(node, f"{label}: missing required key {key!r}")
