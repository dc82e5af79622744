"""The variability spec travels with the model: recorded in the feature catalog, stored in model.json,
checked by ``predict`` (refused naming the option, or a warning when the catalog records none), and
``variability --like-model`` computes with the model's options. Small mock light-curve catalogs."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest

from survey_engine.catalog.catalog import open_catalog
from survey_engine.features.arguments import VariabilityArguments, run_variability
from survey_engine.features.variability import SEARCH_VERSION, SPEC_PROPERTY, recorded_spec
from survey_engine.ingest.file_import.arguments import ImportArguments
from survey_engine.ingest.file_import.run import run_import
from survey_engine.ingest.lightcurves import LightcurveArguments, attach_lightcurves
from survey_engine.ml.apply import predict
from survey_engine.ml.artifact import ModelError, load_model
from survey_engine.mock.lightcurves import write_mock_lightcurves

pytestmark = pytest.mark.slow  # the fixture trains a classifier (~40 CPU-seconds)

OBJECTS = 240
FEATURES = ["r_period", "r_amplitude", "r_fourier_r21", "r_stetson_j", "g_amplitude", "g_eta"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, client):
    """(root, model folder): nested light curves, their default features, a classifier trained on them."""
    from survey_engine.ml.supervised import TrainOptions, train

    root = tmp_path_factory.mktemp("lcspec")
    write_mock_lightcurves(OBJECTS, root / "mock", seed=5, cadence="dense", client=client, progress=False)
    run_import(
        ImportArguments(
            [str(root / "mock" / "objects")],
            str(root / "objects"),
            id_column="object_id",
            max_rows=80,
            margin_arcsec=0,
        ),
        client=client,
        progress=False,
    )
    attach_lightcurves(
        LightcurveArguments(str(root / "objects"), [str(root / "mock" / "detections")], str(root / "nested")),
        client=client,
        progress=False,
    )
    run_variability(VariabilityArguments(str(root / "nested"), str(root / "feats")), client, progress=False)
    opts = TrainOptions("classify", FEATURES, label="var_class", members=1)
    train(str(root / "feats"), opts, str(root / "model"), client=client, progress=False)
    return root, root / "model"


def test_spec_is_recorded_in_the_catalog_and_lsdb_still_reads_it(trained):
    import hats

    root, _ = trained
    spec = recorded_spec(open_catalog(root / "feats"))
    assert spec == {
        "time_field": "time",
        "mag_field": "mag",
        "err_field": "mag_err",
        "band_field": "band",
        "bands": ["g", "r"],
        "min_epochs": 10,
        "min_period": 0.05,
        "max_period": None,
        "samples_per_peak": 1.5,
        "harmonics": 3,
        "search_version": SEARCH_VERSION,
    }
    main = root / "feats" / "feats"
    assert hats.read_hats(main).catalog_info.catalog_name == "feats"  # the HATS layout stays valid


def test_the_model_stores_the_spec_and_applies_to_features_computed_alike(trained, tmp_path, client):
    root, model = trained
    meta, _ = load_model(model)
    assert meta["variability_spec"] == recorded_spec(open_catalog(root / "feats"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "cannot check" warning
        out = predict(str(model), str(root / "feats"), str(tmp_path / "pred"), client=client, progress=False)
    frame = open_catalog(out).compute()
    assert len(frame) == OBJECTS and frame["class_pred"].notna().all()
    assert recorded_spec(open_catalog(out)) == meta["variability_spec"]  # predictions keep the record


def test_the_spec_is_inside_the_checksum(trained, tmp_path):
    _, model = trained
    copy = tmp_path / "model"
    shutil.copytree(model, copy)
    meta = json.loads((copy / "model.json").read_text())
    meta["variability_spec"]["samples_per_peak"] = 3.0
    (copy / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="feature_spec_sha256"):
        load_model(copy)


def test_other_options_are_refused_naming_them_and_like_model_fixes_it(trained, tmp_path, client):
    root, model = trained
    other = VariabilityArguments(
        str(root / "nested"), str(tmp_path / "spp3"), samples_per_peak=3.0, harmonics=4
    )
    run_variability(other, client, progress=False)
    with pytest.raises(ModelError) as err:
        predict(str(model), str(tmp_path / "spp3"), str(tmp_path / "pred3"), client=client, progress=False)
    text = str(err.value)
    assert "harmonics: model 3, catalog 4; samples_per_peak: model 1.5, catalog 3.0" in text
    assert f"--like-model {model}" in text and not (tmp_path / "pred3").exists()

    other.out, other.like_model = str(tmp_path / "like"), str(model)  # the user's fix: one flag
    run_variability(other, client, progress=False)
    assert recorded_spec(open_catalog(tmp_path / "like")) == load_model(model)[0]["variability_spec"]
    out = predict(str(model), str(tmp_path / "like"), str(tmp_path / "pred"), client=client, progress=False)
    assert open_catalog(out).row_count() == OBJECTS


def test_a_catalog_without_a_spec_is_accepted_with_a_warning(trained, tmp_path, client):
    root, model = trained
    old = tmp_path / "old"
    shutil.copytree(root / "feats", old)
    for name in ("hats.properties", "properties"):  # as a catalog of features from elsewhere
        props = old / "feats" / name
        props.write_text("".join(l for l in props.read_text().splitlines(True) if SPEC_PROPERTY not in l))
    assert recorded_spec(open_catalog(old)) is None
    with pytest.warns(UserWarning, match=r"no variability spec recorded .* cannot check that its inputs"):
        out = predict(str(model), str(old), str(tmp_path / "pred"), client=client, progress=False)
    assert open_catalog(out).row_count() == OBJECTS


def test_like_model_needs_a_model_with_a_spec(tmp_path, trained):
    from survey_engine.features.variability import VariabilityError

    root, model = trained
    bare = tmp_path / "bare"
    shutil.copytree(model, bare)
    meta = json.loads((bare / "model.json").read_text())
    del meta["variability_spec"]
    from survey_engine.ml.artifact import feature_spec_sha256

    meta["feature_spec_sha256"] = feature_spec_sha256(meta)  # a model from before specs were stored
    (bare / "model.json").write_text(json.dumps(meta))
    args = VariabilityArguments(str(root / "nested"), str(tmp_path / "out"), like_model=str(bare))
    with pytest.raises(VariabilityError, match=r"model.json: the model records no variability spec"):
        run_variability(args)
    assert not (tmp_path / "out").exists()


def test_the_features_stage_keeps_the_record(trained, tmp_path, client):
    from survey_engine.features.arguments import FeaturesArguments, run_features

    root, model = trained
    run_features(FeaturesArguments(str(root / "feats"), ["r_period"], str(tmp_path / "f")), client, False)
    assert recorded_spec(open_catalog(tmp_path / "f")) == recorded_spec(open_catalog(root / "feats"))
