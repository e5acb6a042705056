"""The built-in algorithm catalog: image, hyperparameter schema, metrics.

A built-in is named in a spec by `algorithm_specification.algorithm_name`, or
by the SageMaker image URI of the same algorithm as `training_image`.
Its image is built from infra/images/<name>/ when it is neither local nor
pullable. Each built-in is also an algorithm specification
(dockyard.algorithm_spec.BUILTINS), which jobs are checked against before
anything is created, as jobs of registered algorithms are.
"""

from __future__ import annotations

import difflib
import re
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

# Matches a number as xgboost prints it; `(?:\t|#011)` accepts a real tab and
# the #011 that CloudWatch shows for one, so SageMaker's regexes carry over.
_NUM = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


class HpKind(StrEnum):
    INT = "int"
    FLOAT = "float"
    CHOICE = "choice"
    STRING = "string"


class HyperparameterSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: HpKind
    required: bool = False
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    description: str = ""


class MetricDefinitionDefault(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    regex: str


class Algorithm(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    image: str  # the tag dockyard gives the image it builds
    image_dir: str  # folder under infra/images/
    build_target: str | None = None  # the Dockerfile stage to build, when the folder's Dockerfile has several
    distributed: bool  # whether instance_count > 1 really trains across hosts
    input_modes: tuple[str, ...]
    channels: tuple[str, ...]
    required_channels: tuple[str, ...]
    hyperparameters: dict[str, HyperparameterSpec]
    metric_definitions: tuple[MetricDefinitionDefault, ...]
    content_types: dict[str, tuple[str, ...]]  # by channel: what it reads
    description: str = ""


# XGBoost's evaluation metrics (its docs' eval_metric list; dockyard.xgboost also takes `@t` and a
# trailing `-` where XGBoost does). An algorithm's MetricDefinitions hold 40 at most: the built-in
# scrapes the first 20 on both channels.
XGBOOST_METRICS = (
    "auc", "error", "logloss", "rmse", "mae", "merror", "mlogloss", "aucpr", "ndcg", "map", "rmsle", "mape", "mphe",
    "pre", "poisson-nloglik", "gamma-nloglik", "gamma-deviance", "tweedie-nloglik", "cox-nloglik", "aft-nloglik",
    "interval-regression-accuracy", "quantile",
)  # fmt: skip


def _xgb_metrics() -> tuple[MetricDefinitionDefault, ...]:
    return tuple(
        MetricDefinitionDefault(
            name=f"{channel}:{metric}",
            regex=rf".*\[[0-9]+\].*(?:\t|#011){channel}-{metric}:{_NUM}",
        )
        for channel in ("train", "validation")
        for metric in XGBOOST_METRICS[:20]
    )


_I, _F, _C = HpKind.INT, HpKind.FLOAT, HpKind.CHOICE

LIBSVM, CSV, PARQUET, RECORDIO_PROTOBUF = (
    "text/libsvm", "text/csv", "application/x-parquet", "application/x-recordio-protobuf",
)  # fmt: skip
# What XGBoost reads: every name SageMaker's accepts for each type (the SDK's TrainingInput(content_type="csv")
# too), to the type it names. The container reads a channel without one as train's, text/libsvm when train has none.
XGBOOST_CONTENT_TYPES = {
    LIBSVM: LIBSVM, "libsvm": LIBSVM, "text/x-libsvm": LIBSVM,
    CSV: CSV, "csv": CSV,
    PARQUET: PARQUET, "parquet": PARQUET,
    RECORDIO_PROTOBUF: RECORDIO_PROTOBUF, "recordio-protobuf": RECORDIO_PROTOBUF,
}  # fmt: skip

XGBOOST = Algorithm(
    name="xgboost",
    description="XGBoost gradient-boosted trees on libsvm, CSV, Parquet or RecordIO-protobuf data, on one "
    "instance or across several (dockyard's built-in)",
    image="dockyard/xgboost:2.0",
    image_dir="xgboost",
    distributed=True,
    input_modes=("File", "Pipe", "FastFile"),  # Pipe for CSV and RecordIO-protobuf (dockyard.xgboost checks)
    channels=("train", "validation"),
    required_channels=("train",),
    content_types={"train": tuple(XGBOOST_CONTENT_TYPES), "validation": tuple(XGBOOST_CONTENT_TYPES)},
    hyperparameters={
        "num_round": HyperparameterSpec(
            kind=_I, required=True, min=1, max=100000, description="number of boosting rounds"
        ),
        "eta": HyperparameterSpec(kind=_F, min=0, max=1, description="learning rate"),
        "max_depth": HyperparameterSpec(kind=_I, min=0, max=64),
        "min_child_weight": HyperparameterSpec(kind=_F, min=0),
        "subsample": HyperparameterSpec(kind=_F, min=0.0001, max=1),
        "colsample_bytree": HyperparameterSpec(kind=_F, min=0.0001, max=1),
        "colsample_bylevel": HyperparameterSpec(kind=_F, min=0.0001, max=1),
        "gamma": HyperparameterSpec(kind=_F, min=0),
        "lambda": HyperparameterSpec(kind=_F, min=0),
        "alpha": HyperparameterSpec(kind=_F, min=0),
        "max_delta_step": HyperparameterSpec(kind=_F, min=0),
        "scale_pos_weight": HyperparameterSpec(kind=_F, min=0),
        "max_bin": HyperparameterSpec(kind=_I, min=2),
        "num_class": HyperparameterSpec(kind=_I, min=2),
        "seed": HyperparameterSpec(kind=_I),
        "nthread": HyperparameterSpec(kind=_I, min=1, description="threads per instance (default: its CPUs)"),
        "early_stopping_rounds": HyperparameterSpec(kind=_I, min=1),
        "checkpoint_frequency": HyperparameterSpec(
            kind=_I, min=1, description="rounds between checkpoints in /opt/ml/checkpoints"
        ),
        "csv_weights": HyperparameterSpec(
            kind=_C, choices=("0", "1"), description="1: CSV's second column is each row's weight"
        ),
        "base_score": HyperparameterSpec(kind=_F),
        "quantile_alpha": HyperparameterSpec(kind=_F, min=0, max=1, description="reg:quantileerror's quantile"),
        "max_leaves": HyperparameterSpec(kind=_I, min=0),
        "grow_policy": HyperparameterSpec(kind=_C, choices=("depthwise", "lossguide")),
        "num_parallel_tree": HyperparameterSpec(kind=_I, min=1),
        "sketch_eps": HyperparameterSpec(kind=_F, min=0, max=1),
        "colsample_bynode": HyperparameterSpec(kind=_F, min=0.0001, max=1),
        "tweedie_variance_power": HyperparameterSpec(kind=_F, min=1, max=2),
        "sampling_method": HyperparameterSpec(kind=_C, choices=("uniform", "gradient_based")),
        "monotone_constraints": HyperparameterSpec(kind=HpKind.STRING, description="e.g. (1,0,-1)"),
        "interaction_constraints": HyperparameterSpec(kind=HpKind.STRING, description="e.g. [[0,1],[2,3]]"),
        "rate_drop": HyperparameterSpec(kind=_F, min=0, max=1),
        "skip_drop": HyperparameterSpec(kind=_F, min=0, max=1),
        "one_drop": HyperparameterSpec(kind=_C, choices=("0", "1")),
        "sample_type": HyperparameterSpec(kind=_C, choices=("uniform", "weighted")),
        "normalize_type": HyperparameterSpec(kind=_C, choices=("tree", "forest")),
        "tree_method": HyperparameterSpec(kind=_C, choices=("auto", "exact", "approx", "hist")),
        "booster": HyperparameterSpec(kind=_C, choices=("gbtree", "gblinear", "dart")),
        "objective": HyperparameterSpec(
            kind=_C,
            choices=(
                "binary:logistic",
                "binary:logitraw",
                "binary:hinge",
                "reg:squarederror",
                "reg:logistic",
                "reg:pseudohubererror",
                "reg:absoluteerror",
                "reg:tweedie",
                "reg:gamma",
                "reg:squaredlogerror",
                "reg:quantileerror",
                "reg:linear",
                "count:poisson",
                "multi:softmax",
                "multi:softprob",
                "rank:pairwise",
                "rank:ndcg",
                "rank:map",
                "survival:cox",
            ),
        ),
        "eval_metric": HyperparameterSpec(
            kind=HpKind.STRING, description="comma-separated XGBoost metrics (dockyard.xgboost checks each)"
        ),
        "verbosity": HyperparameterSpec(kind=_I, min=0, max=3),
    },
    metric_definitions=_xgb_metrics(),
)


def _ic_metrics() -> tuple[MetricDefinitionDefault, ...]:
    """What SageMaker's image classifier prints each epoch: `Epoch[3] Validation-accuracy=0.91`."""
    return tuple(
        MetricDefinitionDefault(name=f"{channel}:accuracy", regex=rf".*Epoch\[[0-9]+\] {label}-accuracy={_NUM}")
        for channel, label in (("train", "Train"), ("validation", "Validation"))
    )


_UNIT = {"min": 0, "max": 1}

_IMAGES = ("application/x-image", "image/jpeg", "image/png", "application/x-recordio")
_MODEL = ("application/x-sagemaker-model",)

IMAGE_CLASSIFICATION = Algorithm(
    name="image-classification",
    description="ResNet image classifier on images with .lst files or RecordIO (dockyard's built-in, PyTorch)",
    image="dockyard/image-classification:1.0",
    image_dir="pytorch",
    build_target="image-classification",
    distributed=True,
    input_modes=("File", "Pipe", "FastFile"),
    channels=("train", "validation", "train_lst", "validation_lst", "model", "pretrained"),
    required_channels=("train",),
    content_types={
        "train": _IMAGES,
        "validation": _IMAGES,
        "train_lst": ("application/x-image", "text/plain"),
        "validation_lst": ("application/x-image", "text/plain"),
        "model": _MODEL,
        "pretrained": ("*/*",),  # torchvision weights, whatever their type
    },
    hyperparameters={
        "num_classes": HyperparameterSpec(kind=_I, required=True, min=2, description="number of output classes"),
        "num_training_samples": HyperparameterSpec(
            kind=_I, required=True, min=1, description="number of training images"
        ),
        "image_shape": HyperparameterSpec(kind=HpKind.STRING, description="'channels,height,width', e.g. '3,224,224'"),
        "num_layers": HyperparameterSpec(kind=_C, choices=("18", "34", "50", "101", "152", "200")),
        "use_pretrained_model": HyperparameterSpec(kind=_C, choices=("0", "1")),
        "epochs": HyperparameterSpec(kind=_I, min=1, max=10000),
        "learning_rate": HyperparameterSpec(kind=_F, **_UNIT),
        "mini_batch_size": HyperparameterSpec(
            kind=_I, min=2, max=65536, description="images per host per step (BatchNorm needs 2 or more)"
        ),
        "optimizer": HyperparameterSpec(kind=_C, choices=("sgd", "adam", "rmsprop", "nag")),
        "momentum": HyperparameterSpec(kind=_F, **_UNIT),
        "weight_decay": HyperparameterSpec(kind=_F, **_UNIT),
        "beta_1": HyperparameterSpec(kind=_F, **_UNIT),
        "beta_2": HyperparameterSpec(kind=_F, **_UNIT),
        "eps": HyperparameterSpec(kind=_F, **_UNIT),
        "gamma": HyperparameterSpec(kind=_F, **_UNIT),
        "lr_scheduler_factor": HyperparameterSpec(kind=_F, **_UNIT),
        "lr_scheduler_step": HyperparameterSpec(kind=HpKind.STRING, description="comma-separated epochs, e.g. '10,20'"),
        "augmentation_type": HyperparameterSpec(kind=_C, choices=("crop", "crop_color", "crop_color_transform")),
        "resize": HyperparameterSpec(kind=_I, min=1, description="shorter side in pixels before cropping"),
        "top_k": HyperparameterSpec(kind=_I, min=2),
        "checkpoint_frequency": HyperparameterSpec(
            kind=_I, min=1, description="epochs between checkpoints in /opt/ml/checkpoints"
        ),
        "early_stopping": HyperparameterSpec(kind=_C, choices=("True", "False", "true", "false")),
        "early_stopping_min_epochs": HyperparameterSpec(kind=_I, min=1),
        "early_stopping_patience": HyperparameterSpec(kind=_I, min=1),
        "early_stopping_tolerance": HyperparameterSpec(kind=_F, **_UNIT),
        "precision_dtype": HyperparameterSpec(kind=_C, choices=("float32", "float16")),
        "multi_label": HyperparameterSpec(kind=_C, choices=("0",), description="multi-label training is not built"),
        "use_weighted_loss": HyperparameterSpec(kind=_C, choices=("0", "1")),
        "kv_store": HyperparameterSpec(kind=_C, choices=("dist_sync", "dist_async", "device", "local")),
    },
    metric_definitions=_ic_metrics(),
)

ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in (XGBOOST, IMAGE_CLASSIFICATION)}

# What `sagemaker.image_uris.retrieve(NAME, region)` returns for the built-ins
# dockyard has: ACCOUNT.dkr.ecr.REGION.amazonaws.com[.cn]/REPOSITORY:TAG, where
# ACCOUNT is one of SageMaker's algorithm accounts (the SageMaker Python SDK's
# image_uri_config lists them per region). Such an image runs dockyard's built-in
# of that name, so SageMaker code that names the image runs unchanged.
SAGEMAKER_REPOSITORIES = {
    "image-classification": "image-classification",
    "xgboost": "xgboost",
    "sagemaker-xgboost": "xgboost",
}
SAGEMAKER_ALGORITHM_ACCOUNTS = frozenset(
    {
        "104374241257", "106583098589", "108575199400", "121021644041", "124985052026", "141502667606", "190319476487",
        "226302683700", "237065988967", "246618743249", "249704162688", "257386234256", "257758044811", "272398656194",
        "281123927165", "286214385809", "306986355934", "341280168497", "354813040037", "366743142698", "387376663083",
        "390948362332", "414596584902", "433757028032", "450853457545", "451049120500", "455444449433", "469771592824",
        "475088953585", "490574956308", "492215442770", "501404015308", "510948584623", "544295431143", "628508329040",
        "632365934929", "644912444149", "651117190479", "659782779980", "662702820516", "669576153137", "680994064768",
        "683313688378", "685385470294", "720646828776", "737474898029", "746614075791", "749696950732", "764974769150",
        "765400339828", "783357654285", "801668240914", "811284229777", "813361260812", "825641698319", "833128469047",
        "855470959533", "867004704886", "898809789911", "951798379941", "978288397137", "991648021394",
    }
)  # fmt: skip
_SAGEMAKER_IMAGE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?/(?P<repository>[a-z0-9-]+)(?::[\w.-]+)?$"
)


def sagemaker_builtin(image: str | None) -> str | None:
    """The built-in that a SageMaker algorithm image URI names, or None for any other image."""
    match = _SAGEMAKER_IMAGE.match(image or "")
    if not match or match["account"] not in SAGEMAKER_ALGORITHM_ACCOUNTS:
        return None
    return SAGEMAKER_REPOSITORIES.get(match["repository"])


CLARIFY_IMAGE = "dockyard/clarify:1.0"  # dockyard's Clarify processor (infra/images/clarify)
CLARIFY_REPOSITORY = "sagemaker-clarify-processing"  # SageMaker's, in every region's ECR account


def processing_image(image: str) -> str:
    """The image a processing job runs: dockyard's Clarify processor for SageMaker Clarify's image
    URI (what the SageMaker SDK's SageMakerClarifyProcessor sends), else the image as given."""
    match = _SAGEMAKER_IMAGE.match(image)
    return CLARIFY_IMAGE if match and match["repository"] == CLARIFY_REPOSITORY else image


def suggest(word: str, options: list[str] | tuple[str, ...]) -> str:
    """A 'did you mean' hint for a misspelt name, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(options), n=1)
    return f"did you mean '{close[0]}'?" if close else ""


def metric_definitions_of(algorithm_name: str | None, given: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (name, regex) pairs to scrape: the spec's own, else the built-in's defaults."""
    if given or not algorithm_name or algorithm_name not in ALGORITHMS:
        return given
    return [(m.name, m.regex) for m in ALGORITHMS[algorithm_name].metric_definitions]
