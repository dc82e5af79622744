"""Models more than one test module reads: trained once per session (minutes each on 2 cores)."""

from __future__ import annotations

import pytest

from survey_engine.ml.supervised import TrainOptions, train
from tests.conftest import shared_path

SDSS_COLOURS = ["u-g", "g-r", "r-i", "i-z", "r"]


@pytest.fixture(scope="session")
def sdss_model(client, tmp_path_factory):
    """The default photo-z model (with the textbook baselines) on the SDSS galaxies: its folder and
    ``train``'s result. test_photoz checks it against the baselines, test_training against the
    members' model it replaced."""
    out = tmp_path_factory.mktemp("pz") / "sdss_photoz"
    # refit=False: the saved model is the evaluated one (the refit is tested in test_bad_input.py)
    opts = TrainOptions(
        "photoz", SDSS_COLOURS, target="redshift", where="spec_class == 'GALAXY'", baselines=True, refit=False
    )
    result = train(str(shared_path("photoz/sdss_galaxy_colors_50k.parquet")), opts, str(out), client=client)
    return out, result
