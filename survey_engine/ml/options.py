"""What a supervised training run is asked for (``TrainOptions``), the error it raises on data
that cannot give a model (``TrainingError``), and the defaults of the photo-z and classification
models: hyperparameters, ensemble members, class weights and the photo-z calibration share."""

from __future__ import annotations

from dataclasses import dataclass, field

from survey_engine.catalog.row_filter import normalise_where
from survey_engine.errors import SurveyEngineError, option

# Photo-z, ``ensemble="stacked"``: one booster on the features and every member's rotation of them
# side by side, stopped early on the calibration rows ("rounds" is the most it may take), and a
# 100-round quantile booster: about 350 trees per row where the members below need 5,400. Measured
# on held-out fifths: SDSS sigma_NMAD 0.0152 vs 0.0153 (members), mock sky 0.0578 vs 0.0578, but
# BOSS DR10 0.0193 vs 0.0186: not the default.
PHOTOZ_PARAMS = {
    "max_depth": 8,
    "eta": 0.05,
    "subsample": 0.8,
    "colsample_bytree": 0.6,
    "min_child_weight": 5,
    "rounds": 2000,
}
QUANTILE_PARAMS = {
    "max_depth": 5,
    "eta": 0.2,
    "subsample": 0.8,
    "colsample_bytree": 0.9,
    "min_child_weight": 5,
    "rounds": 100,
}
EARLY_STOPPING_ROUNDS = 100  # rounds without a better calibration-row loss before the median booster stops
# ... then the distilled student keeps the fewest rounds whose calibration-row loss is within this
# share of the best: its loss curve is flat for hundreds of rounds, whose trees buy almost nothing
# on unseen rows while every predicted row goes through each of them.
STOP_TOLERANCE = 0.002
# Photo-z, ``ensemble="members"`` (the model before): one 1,200-round booster per member, their
# mean, and a 300-round quantile booster, all trained to the end.
MEMBER_PHOTOZ_PARAMS = {
    "max_depth": 7,
    "eta": 0.03,
    "subsample": 0.8,
    "colsample_bytree": 0.9,
    "min_child_weight": 5,
    "rounds": 1200,
}
MEMBER_QUANTILE_PARAMS = {
    "max_depth": 6,
    "eta": 0.1,
    "subsample": 0.8,
    "colsample_bytree": 0.9,
    "min_child_weight": 5,
    "rounds": 300,
}
# Photo-z, ``ensemble="distilled"``: the members below are trained as before, then one student
# booster on their views side by side learns to reproduce their mean, stopped early on the
# calibration rows and cut back to the fewest rounds within STOP_TOLERANCE of its best loss; the
# model keeps the student (and the 100-round quantile booster above). BOSS held-out fifth, one
# process: members 0.01876; student of depth 10: 0.01864 with 357 trees (depth 8: 0.01889 with 664).
# Through ``train`` (2 workers, held-out fifth; eta 0.05 without the tolerance -> eta 0.1 with it):
# SDSS 0.01535 with 210 trees -> 0.01542 with 51; BOSS DR10 0.01863 / 577 -> 0.01876 / 61; mock
# sky (100k rows) 382 trees -> 45, 0.05844 against the members' 0.0581 (eta 0.1 alone: 121-148
# trees at the same sigma_NMAD; eta 0.05 with the tolerance: 93-150 trees, sigma_NMAD as eta 0.1's).
DISTILLED_PARAMS = {
    "max_depth": 10,
    "eta": 0.1,
    "subsample": 0.8,
    "colsample_bytree": 0.6,
    "min_child_weight": 1,
    "rounds": 3000,
}
# How the members' rotated views reach the boosters: "distilled" (photo-z), one student of the
# members; "stacked", side by side in one booster trained on the truth;
# "members", one booster each, averaged.
ENSEMBLES = ("distilled", "stacked", "members")
TASK_ENSEMBLES = {"photoz": ENSEMBLES, "classify": ("stacked", "members")}
# The default: "distilled" keeps the members' sigma_NMAD on SDSS (tests/ml/test_training.py) and on
# BOSS DR10 through ``train`` (test_photoz.py, 3% below the textbook baselines), where "stacked" fell
# short; it predicts with about a tenth of the members' trees. "members" stays selectable.
PHOTOZ_ENSEMBLE = "distilled"
# Classification, ``ensemble="members"`` (the model before): one 800-round booster per member
# (4 x 800 x 3 classes = 9,600 trees per row), their mean softmax.
CLASSIFY_PARAMS = {
    "max_depth": 4,
    "eta": 0.03,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "min_child_weight": 2,
    "rounds": 800,
}
# Classification, ``ensemble="stacked"`` (the default): one booster on the features and all four
# rotations side by side (depth 6, eta 0.1), stopped early on the inner held-out fold (the
# temperature's rows) and cut back to the fewest rounds within STOP_TOLERANCE of its best log loss;
# then the saved booster is trained on every training row for that many rounds. SDSS DR14, 5
# spatial folds through ``train`` (2 workers, the test's path): accuracy 0.9724, macro-F1 0.9620,
# log loss 0.0937, ECE 0.0092, 68 s of training; the members 0.9719 / 0.9613 / 0.0944 / 0.0132, 581 s
# (depth 4 at eta 0.05: 0.9724 / 0.9628 / 0.0930 / 0.0123, but 2,007 trees per row on the mock sky;
# depth 5 at eta 0.1: 0.9726 / 0.9621). Mock sky (100k rows, bench): 390 trees per row against the
# members' 9,600, held-out accuracy 0.8730 against 0.8726; predicts 1e6 rows at 170,000 rows/s.
STACKED_CLASSIFY_PARAMS = {**CLASSIFY_PARAMS, "max_depth": 6, "eta": 0.1, "rounds": 3000}
CLASSIFY_ENSEMBLE = "stacked"
# Class weights (total / (k n_c)) ** power. Measured on SDSS DR14 star/galaxy/QSO: 0 (none) gave
# the best accuracy and macro-F1 (0.969 / 0.951 vs 0.964 / 0.939 balanced); --class-weight sets it.
CLASS_WEIGHT_POWER = 0.0
CLASS_WEIGHTS = {"none": 0.0, "sqrt": 0.5, "balanced": 1.0}
# Members of the rotated-view ensemble (1 = one booster on the plain features, as before).
MEMBERS = 4
# Photo-z calibration rows: a share of the training rows (chosen by sky pixel, as the folds) that the
# boosters never train on; the intervals are calibrated on them (ml/pdf.py). 15% kept the coverage
# of 3,000-6,000-row calibration sets within about 0.01 of nominal on SDSS and BOSS.
CALIBRATION_FRACTION = 0.15
CALIBRATION_SEED = 7919
# Spatial folds and calibration rows go by HEALPix pixel: order 7 (~0.46 deg) when the labelled rows
# fill at least FOLD_MIN_PIXELS of them (counted as (sum n)^2 / sum n^2, so a dense deep field in a
# sparse survey counts as few), else the first finer order up to 12 (~0.86') that does (a deep field
# of 0.4 deg^2 lies in 2-7 order-7 pixels: whole folds and the calibration share came out empty);
# rows too crowded even at order 12 are split by row. SDSS DR14 (5k rows) fills 822 order-7 pixels.
FOLD_ORDERS = (7, 8, 9, 10, 11, 12)
FOLD_MIN_PIXELS = 200
FOLD_DENSE_PIXELS = 256  # order-7 pixels counted again at order 12 (at most 262,144 cells in memory)
CALIBRATION_MAX_ROWS = 200_000
TASKS = ("photoz", "classify")
# Column names that hold spectroscopic redshifts: never features of a photometric classifier.
SPECTROSCOPIC_COLUMNS = {
    "redshift",
    "z_spec",
    "zspec",
    "specz",
    "spec_z",
    "z_noqso",
    "zspec_best",
    "redshift_err",
}


def default_ensemble(task: str) -> str:
    """The ensemble a task trains unless asked otherwise."""
    return PHOTOZ_ENSEMBLE if task == "photoz" else CLASSIFY_ENSEMBLE


class TrainingError(SurveyEngineError, ValueError):
    """Training data that cannot give a model (the message names the column or the problem)."""


@dataclass
class TrainOptions:
    task: str
    features: list[str]
    target: str | None = None
    label: str | None = None
    seed: int = 42
    test_fraction: float = 0.2
    cv: int = 0
    search: bool = False
    baselines: bool = False
    gpu: bool = False
    ebv_column: str | None = None
    missing: str = "nan"
    ra_column: str | None = None
    dec_column: str | None = None
    magnitude: str | None = (
        None  # --mag-column: metrics in bins of it (default r, else a band magnitude feature)
    )
    where: str | None = None  # pandas query selecting the training rows, e.g. "spec_class == 'GALAXY'"
    members: int = MEMBERS  # rotated views of the ensemble; 1 = a single booster on the plain features
    ensemble: str | None = (
        None  # photoz: "distilled" (default), "stacked", "members"; classify: "stacked" (default), "members"
    )
    refit: bool = (
        True  # after evaluation, refit the saved model on every labelled row (but the calibration rows)
    )
    text_as_missing: bool = (
        False  # text in a feature column: a missing value (explicit --missing) or an error
    )
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.where = normalise_where(self.where)
        if self.task not in TASKS:
            raise TrainingError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.task == "photoz" and not self.target:
            raise TrainingError("photoz needs --target COLUMN (the spectroscopic redshift)")
        if self.task == "classify" and not self.label:
            raise TrainingError("classify needs --label COLUMN")
        if not 0.05 <= self.test_fraction <= 0.35:  # at least 3 folds: the training rows keep an inner fold
            raise TrainingError(
                f"{option('--test-fraction', 'test_fraction')} must be within 0.05..0.35 (the training rows "
                f"need two folds of their own, one to stop early on), got {self.test_fraction}"
            )
        if self.cv and self.cv < 2:
            raise TrainingError(f"--cv needs at least 2 folds, got {self.cv}")
        if self.ensemble is not None and self.ensemble not in ENSEMBLES:
            raise TrainingError(f"ensemble must be one of {ENSEMBLES}, got {self.ensemble!r}")
        if self.ensemble is not None and self.ensemble not in TASK_ENSEMBLES[self.task]:
            raise TrainingError(
                f"ensemble {self.ensemble!r} is for photoz; a classifier is one of {TASK_ENSEMBLES['classify']}"
            )
        if not 1 <= int(self.members) <= 32:
            raise TrainingError(f"--members must be within 1..32, got {self.members}")

    @property
    def folds(self) -> int:
        """Folds of the held-out split (fold 0 is held out); ``--cv K`` has its own K folds."""
        return int(round(1 / self.test_fraction))

    @property
    def ensemble_layout(self) -> str:
        """The ensemble asked for, or the task's default (``PHOTOZ_ENSEMBLE``, ``CLASSIFY_ENSEMBLE``)."""
        return self.ensemble or default_ensemble(self.task)

    @property
    def truth(self) -> str:
        return self.target if self.task == "photoz" else self.label
