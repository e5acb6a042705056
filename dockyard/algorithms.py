"""The built-in algorithm catalog: image, hyperparameter schema, metrics.

A built-in is named in a spec by `algorithm_specification.algorithm_name`.
Its image is built from infra/images/<name>/ when it is neither local nor
pullable. Hyperparameters are validated against the schema here before
anything is created.
"""

from __future__ import annotations

import difflib
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from dockyard.errors import FieldProblem

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

    def check(self, value: str) -> str | None:
        """Return what is wrong with `value`, or None when it is acceptable."""
        if self.kind is HpKind.CHOICE:
            return None if value in self.choices else f"must be one of {', '.join(self.choices)}"
        if self.kind is HpKind.STRING:
            return None
        try:
            number = int(value) if self.kind is HpKind.INT else float(value)
        except ValueError:
            return f"must be {'an integer' if self.kind is HpKind.INT else 'a number'}"
        if self.min is not None and number < self.min:
            return f"must be at least {self.min:g}"
        if self.max is not None and number > self.max:
            return f"must be at most {self.max:g}"
        return None


class MetricDefinitionDefault(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    regex: str


class Algorithm(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    image: str  # the tag dockyard gives the image it builds
    image_dir: str  # folder under infra/images/
    distributed: bool  # whether instance_count > 1 really trains across hosts
    input_modes: tuple[str, ...]
    channels: tuple[str, ...]
    required_channels: tuple[str, ...]
    hyperparameters: dict[str, HyperparameterSpec]
    metric_definitions: tuple[MetricDefinitionDefault, ...]


def _xgb_metrics() -> tuple[MetricDefinitionDefault, ...]:
    names = ["auc", "error", "logloss", "rmse", "mae", "merror", "mlogloss", "aucpr", "ndcg", "map"]
    return tuple(
        MetricDefinitionDefault(
            name=f"{channel}:{metric}",
            regex=rf".*\[[0-9]+\].*(?:\t|#011){channel}-{metric}:{_NUM}",
        )
        for channel in ("train", "validation")
        for metric in names
    )


_I, _F, _C = HpKind.INT, HpKind.FLOAT, HpKind.CHOICE

XGBOOST = Algorithm(
    name="xgboost",
    image="dockyard/xgboost:1.0",
    image_dir="xgboost",
    distributed=False,
    input_modes=("File",),
    channels=("train", "validation"),
    required_channels=("train",),
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
        "early_stopping_rounds": HyperparameterSpec(kind=_I, min=1),
        "checkpoint_frequency": HyperparameterSpec(
            kind=_I, min=1, description="rounds between checkpoints in /opt/ml/checkpoints"
        ),
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
                "count:poisson",
                "multi:softmax",
                "multi:softprob",
                "rank:pairwise",
                "rank:ndcg",
                "rank:map",
                "survival:cox",
            ),
        ),
        "eval_metric": HyperparameterSpec(kind=HpKind.STRING, description="comma-separated xgboost metrics"),
        "verbosity": HyperparameterSpec(kind=_I, min=0, max=3),
    },
    metric_definitions=_xgb_metrics(),
)

ALGORITHMS: dict[str, Algorithm] = {XGBOOST.name: XGBOOST}


def suggest(word: str, options: list[str] | tuple[str, ...]) -> str:
    """A 'did you mean' hint for a misspelt name, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(options), n=1)
    return f"did you mean '{close[0]}'?" if close else ""


def check_hyperparameters(algorithm: Algorithm, hyperparameters: dict[str, str]) -> list[FieldProblem]:
    """Every problem of `hyperparameters` against the algorithm's schema."""
    problems: list[FieldProblem] = []
    schema = algorithm.hyperparameters
    for name, value in hyperparameters.items():
        path = f"hyperparameters.{name}"
        spec = schema.get(name)
        if spec is None:
            hint = suggest(name, list(schema))
            problems.append(
                FieldProblem(
                    path,
                    f"not a hyperparameter of the built-in {algorithm.name}",
                    hint or f"remove it; known: {', '.join(sorted(schema))}",
                )
            )
            continue
        wrong = spec.check(value)
        if wrong:
            problems.append(FieldProblem(path, f"{wrong} — got '{value}'", "fix the value"))
    for name, spec in schema.items():
        if spec.required and name not in hyperparameters:
            problems.append(
                FieldProblem(
                    f"hyperparameters.{name}",
                    f"required by the built-in {algorithm.name}",
                    f"add it ({spec.description or spec.kind.value})",
                )
            )
    return problems


def metric_definitions_of(algorithm_name: str | None, given: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (name, regex) pairs to scrape: the spec's own, else the built-in's defaults."""
    if given or not algorithm_name or algorithm_name not in ALGORITHMS:
        return given
    return [(m.name, m.regex) for m in ALGORITHMS[algorithm_name].metric_definitions]
