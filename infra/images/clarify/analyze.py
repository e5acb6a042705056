#!/usr/bin/env python3
"""dockyard's Clarify processor: SageMaker Clarify's analysis over a dataset and a model.

Reads, as SageMaker Clarify's container does:
  /opt/ml/processing/input/config/analysis_config.json   the analysis (SageMaker's fields)
  /opt/ml/processing/input/data/                         the dataset (text/csv, application/jsonlines,
                                                          application/x-parquet), one or more files
  /opt/ml/processing/input/model/                        the model (an XGBoost `xgboost-model`),
                                                          for post-training bias and SHAP; or
  $DOCKYARD_MODEL_ENDPOINT                               the URL of a container serving the model
                                                          by SageMaker's inference contract (dockyard
                                                          starts it beside this one, as Clarify starts
                                                          a shadow endpoint): POST /invocations with
                                                          predictor.content_type rows, answers read
                                                          by predictor.accept_type, label, probability
Writes to /opt/ml/processing/output/:
  analysis.json                 pre_training_bias_metrics, post_training_bias_metrics, explanations
                                (written after each part, so what ran is kept if a later part fails)
  explanations_shap/out.csv     one row of SHAP values per dataset row
  report.html                   bias bars per facet and the SHAP summary (methods.report's name and
                                title, when given)
  failure                       why the analysis stopped, when it did (exit code 1; also in
                                /opt/ml/output/message when run as a processing job)

Bias metrics are smclarify's (AWS's library behind Clarify); SHAP values are exact
tree SHAP for XGBoost models, from XGBoost itself (`pred_contribs`, which shap's
TreeExplainer calls for them: the model's margin, log-odds for binary:logistic), and
the shap package's Kernel SHAP otherwise (of the served model's score) or when
`methods.shap.algorithm` is "kernel" (dockyard's own key).
"""

from __future__ import annotations

import html
import io
import json
import math
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

PROCESSING = Path(os.environ.get("DOCKYARD_PROCESSING_ROOT", "/opt/ml/processing"))
CONFIG = PROCESSING / "input" / "config" / "analysis_config.json"
DATA = PROCESSING / "input" / "data"
MODEL = PROCESSING / "input" / "model"
OUT = PROCESSING / "output"
MESSAGE = Path("/opt/ml/output/message")  # a processing job's ExitMessage
DATASET_TYPES = ("text/csv", "application/jsonlines", "application/x-parquet")
ENDPOINT = os.environ.get("DOCKYARD_MODEL_ENDPOINT", "")  # a served model's URL, when dockyard started one
STARTUP_SECONDS = float(os.environ.get("DOCKYARD_MODEL_STARTUP_SECONDS", "300"))
BATCH_ROWS = 1000  # rows per POST /invocations: well under SageMaker's 6 MB payload for tabular rows
AGG_METHODS = ("mean_abs", "median", "mean_sq")


class AnalysisError(Exception):
    """The analysis cannot run as configured: the message says which field, what is wrong, and the fix."""


def read_dataset(config: dict) -> pd.DataFrame:
    kind = config.get("dataset_type", "text/csv")
    if kind not in DATASET_TYPES:
        raise AnalysisError(f"dataset_type: '{kind}' is not one Clarify reads — use one of {', '.join(DATASET_TYPES)}")
    files = sorted(p for p in DATA.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise AnalysisError(f"no dataset files under {DATA}: give the processing job a dataset input")
    headers = config.get("headers")
    frames = []
    for path in files:
        if kind == "application/x-parquet":
            frames.append(pd.read_parquet(path))
        elif kind == "application/jsonlines":
            frames.append(pd.read_json(path, lines=True))
        else:
            frame = pd.read_csv(path, header=None if headers else 0)
            if headers:
                if len(frame.columns) != len(headers):
                    raise AnalysisError(
                        f"headers: {len(headers)} names for {len(frame.columns)} columns in {path.name} — "
                        "name every column, the label included"
                    )
                frame.columns = headers
                if [str(v) for v in frame.iloc[0]] == [str(h) for h in headers]:  # a header row as well
                    frame = frame.iloc[1:].reset_index(drop=True).apply(_numbers)
            frames.append(frame)
    df = pd.concat(frames, ignore_index=True)
    if headers and kind != "text/csv":
        df = df[[h for h in headers if h in df.columns]]
    return df


def _numbers(values: pd.Series) -> pd.Series:
    """A column as numbers where every value is one (a CSV read with its header row as data)."""
    try:
        return pd.to_numeric(values)
    except (ValueError, TypeError):
        return values


def column(df: pd.DataFrame, ref: str | int, field: str) -> str:
    """A column named, or indexed, by a field of the config."""
    if isinstance(ref, int) and not isinstance(ref, bool):
        if not 0 <= ref < len(df.columns):
            raise AnalysisError(f"{field}: index {ref} is out of range — the data has {len(df.columns)} columns")
        return str(df.columns[ref])
    if ref not in df.columns:
        raise AnalysisError(f"{field}: no column '{ref}' in the data — its columns are {list(map(str, df.columns))}")
    return str(ref)


def _values(spec: object) -> list:
    return list(spec) if isinstance(spec, list | tuple) else [spec]


def check(config: dict, df: pd.DataFrame) -> tuple[str, list, list[tuple[str, list | None]], str | None]:
    """The label column and its positive values, each facet and its sensitive values, the group
    variable; every reference checked against the data."""
    if "label" not in config:
        raise AnalysisError("label: required — name the column that holds the true label")
    label = column(df, config["label"], "label")
    positive = _values(config.get("label_values_or_threshold", []))
    if not positive:
        raise AnalysisError("label_values_or_threshold: required — the positive label values, or a threshold")
    from smclarify.bias.metrics.common import DataType, series_datatype

    labels = df[label]
    threshold = series_datatype(labels, positive) is DataType.CONTINUOUS
    if threshold and not (pd.to_numeric(labels) > float(positive[0])).any():
        raise AnalysisError(
            f"label_values_or_threshold: column '{label}' reads as continuous (numbers, over 5% of them "
            f"distinct), so {positive[0]} is a threshold, and no label is above it — give a lower threshold, "
            "or more rows if the labels are classes"
        )
    if not threshold and not labels.astype(str).isin([str(v) for v in positive]).any():
        raise AnalysisError(
            f"label_values_or_threshold: {positive} never occurs in column '{label}' — its values are "
            f"{sorted(map(str, labels.unique()))[:10]}"
        )
    facets = []
    for i, facet in enumerate(config.get("facet") or []):
        name = column(df, facet.get("name_or_index"), f"facet[{i}].name_or_index")
        sensitive = facet.get("value_or_threshold")
        if sensitive is not None:
            sensitive = _values(sensitive)
            values = df[name]
            continuous = series_datatype(values, sensitive) is DataType.CONTINUOUS  # as smclarify will judge it
            if continuous:
                rows = (pd.to_numeric(values) > float(sensitive[0])).sum()
            else:
                rows = values.astype(str).isin(map(str, sensitive)).sum()
            if rows == 0 and continuous:
                raise AnalysisError(
                    f"facet[{i}].value_or_threshold: column '{name}' reads as continuous (numbers, over 5% of them "
                    f"distinct), so {sensitive[0]} is a threshold, and no row is above it — the facet is empty"
                )
            if rows == 0:
                raise AnalysisError(
                    f"facet[{i}].value_or_threshold: no row of '{name}' has {sensitive} — the facet is empty"
                )
        facets.append((name, sensitive))
    group = column(df, config["group_variable"], "group_variable") if config.get("group_variable") else None
    return label, positive, facets, group


class Booster:
    """An XGBoost model loaded here: scores are its predictions (probabilities for binary:logistic)."""

    tree = True

    def __init__(self, path: Path) -> None:
        import xgboost

        self.booster = xgboost.Booster()
        self.booster.load_model(bytearray(path.read_bytes()))  # its format read from the bytes: no file-name guess

    def scores(self, features: pd.DataFrame, margin: bool = False) -> np.ndarray:
        import xgboost

        return np.asarray(self.booster.predict(xgboost.DMatrix(features.values), output_margin=margin))

    def predicted(self, features: pd.DataFrame, threshold: float) -> list:
        return [int(s > threshold) for s in self.scores(features)]


class Endpoint:
    """A model served by SageMaker's inference contract: POST /invocations, rows in, answers out,
    read as SageMaker Clarify reads them (predictor's content_type, content_template, accept_type,
    label, probability, label_headers)."""

    tree = False

    def __init__(self, url: str, predictor: dict, dataset_type: str) -> None:
        self.url = url.rstrip("/")
        given = dataset_type if dataset_type in ("text/csv", "application/jsonlines") else "text/csv"
        self.content_type = str(predictor.get("content_type") or given).lower()  # the SDK's default: the dataset's
        self.accept_type = str(predictor.get("accept_type") or self.content_type).lower()
        for field, value in (("content_type", self.content_type), ("accept_type", self.accept_type)):
            if value not in ("text/csv", "application/jsonlines"):
                raise AnalysisError(
                    f"predictor.{field}: '{value}' is not one dockyard's processor speaks to a model — "
                    "use text/csv or application/jsonlines"
                )
        self.template = str(predictor.get("content_template") or '{"features":$features}')
        if self.content_type == "application/jsonlines" and "$features" not in self.template:
            raise AnalysisError("predictor.content_template: it has no $features placeholder — put one where the "
                                "row's features go, e.g. {\"features\":$features}")  # fmt: skip
        self.label, self.probability = predictor.get("label"), predictor.get("probability")
        self.headers = predictor.get("label_headers")
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy

    def wait(self) -> None:
        """Until the model answers GET /ping, as Clarify waits for its shadow endpoint."""
        deadline = time.monotonic() + STARTUP_SECONDS
        last = ""
        while time.monotonic() < deadline:
            try:
                with self.opener.open(f"{self.url}/ping", timeout=5) as answer:
                    if answer.status == 200:
                        return
                    last = f"HTTP {answer.status}"
            except (OSError, urllib.error.URLError) as exc:
                last = str(getattr(exc, "reason", exc))
            time.sleep(0.5)
        raise AnalysisError(
            f"predictor.model_name: the model's container did not answer GET /ping on port 8080 within "
            f"{STARTUP_SECONDS:g} s ({last}) — its image must serve SageMaker's inference contract (a `serve` "
            "command answering /ping and /invocations on port 8080); its output is in the job log as [model]"
        )

    def _answers(self, features: pd.DataFrame) -> list:
        """The model's answer for each row, as parsed from accept_type."""
        answers: list = []
        for start in range(0, len(features), BATCH_ROWS):
            batch = features.iloc[start : start + BATCH_ROWS]
            if self.content_type == "text/csv":
                body = batch.to_csv(header=False, index=False)
            else:
                body = "".join(self.template.replace("$features", json.dumps(row)) + "\n" for row in batch.values.tolist())
            request = urllib.request.Request(
                f"{self.url}/invocations",
                data=body.encode(),
                headers={"Content-Type": self.content_type, "Accept": self.accept_type},
            )
            try:
                with self.opener.open(request, timeout=60) as answer:
                    text = answer.read().decode()
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode(errors="replace")[:300]
                raise AnalysisError(
                    f"predictor: the model answered POST /invocations with HTTP {exc.code} ({detail.strip()}) — "
                    f"check that it takes {self.content_type} rows of the dataset's features"
                ) from None
            except OSError as exc:
                raise AnalysisError(f"predictor: POST /invocations failed ({exc}) — see [model] in the job log") from None
            lines = [line for line in text.splitlines() if line.strip()]
            if len(lines) != len(batch):
                raise AnalysisError(
                    f"predictor: the model answered {len(lines)} lines for {len(batch)} rows — it must answer "
                    f"one line per row ({self.accept_type})"
                )
            try:
                answers += [_csv_answer(line) for line in lines] if self.accept_type == "text/csv" else \
                    [json.loads(line) for line in lines]  # fmt: skip
            except ValueError:
                raise AnalysisError(f"predictor.accept_type: the model's answer {lines[0][:200]!r} is not "
                                    f"{self.accept_type} — set accept_type to what it answers") from None  # fmt: skip
        return answers

    def _pick(self, answers: list, key: object, field: str) -> list:
        if key is None:
            if any(isinstance(a, dict) for a in answers):
                raise AnalysisError(
                    f"predictor: the model answers {str(answers[0])[:200]} — name its score with predictor.probability "
                    "or its predicted label with predictor.label"
                )
            return [a[0] if isinstance(a, list) and len(a) == 1 else a for a in answers]
        picked = []
        for answer in answers:
            try:
                picked.append(answer[key] if isinstance(answer, dict | list) else answer)
            except (KeyError, IndexError, TypeError):
                raise AnalysisError(
                    f"predictor.{field}: {key!r} is not in the model's answer {str(answer)[:200]} — "
                    "name the key (JSON) or index (CSV) that holds it"
                ) from None
        return picked

    def scores(self, features: pd.DataFrame, margin: bool = False) -> np.ndarray:  # noqa: ARG002
        """One score per row (SHAP explains it): predictor.probability's, else the answer itself."""
        key = self.probability if self.probability is not None else self.label
        picked = self._pick(self._answers(features), key, "probability")
        if any(isinstance(p, list) for p in picked):
            raise AnalysisError(
                "methods.shap: the model answers several scores a row (one per class); dockyard explains one score — "
                "serve the positive class's score, and name it with predictor.probability"
            )
        try:
            return np.asarray(picked, dtype=float)
        except (TypeError, ValueError):
            raise AnalysisError(
                f"predictor: the model's answers are not scores ({str(picked[:3])[:200]}) — name the score with "
                "predictor.probability"
            ) from None

    def predicted(self, features: pd.DataFrame, threshold: float) -> list:
        """The predicted label of each row: predictor.label's (a probability there cut at the threshold),
        else the class of the highest of several scores (named by label_headers), else the score cut at
        the threshold."""
        answers = self._answers(features)
        if self.label is not None:
            labels = self._pick(answers, self.label, "label")
            if all(isinstance(v, float) and not v.is_integer() and 0 <= v <= 1 for v in labels):
                return [int(v > threshold) for v in labels]  # label names a probability, as the SDK documents
            return labels
        picked = self._pick(answers, self.probability, "probability")
        if picked and all(isinstance(p, list) for p in picked):
            best = [int(np.argmax(p)) for p in picked]
            headers = self.headers
            return [headers[i] for i in best] if headers and len(headers) == len(picked[0]) else best
        try:
            return [int(float(v) > threshold) for v in picked]
        except (TypeError, ValueError):
            return picked  # labels, as the dataset's


def _csv_answer(line: str) -> object:
    """One CSV answer line: a value, or a list of values, each a number where it spells one."""
    fields = [_number(v) for v in line.split(",")]
    return fields[0] if len(fields) == 1 else fields


def _number(value: object) -> object:
    """A CSV answer's field as the number it spells, else as it is."""
    if isinstance(value, str):
        value = value.strip()
        try:
            return float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            return value
    return value


def load_model(config: dict) -> Booster | Endpoint | None:
    """The model to explain: the XGBoost model given as the model input, else the served one."""
    path = MODEL / "xgboost-model"
    if path.exists():
        return Booster(path)
    if ENDPOINT:
        endpoint = Endpoint(ENDPOINT, config.get("predictor") or {}, config.get("dataset_type", "text/csv"))
        endpoint.wait()
        return endpoint
    if MODEL.is_dir() and any(MODEL.iterdir()):
        raise AnalysisError(
            "predictor.model_name: the model holds no xgboost-model, so it cannot be loaded here — name the "
            "training job that made it as model_name: its image then serves it (SageMaker's inference contract)"
        )
    return None


def resolve_columns(config: dict, df: pd.DataFrame) -> dict:
    """The config with `predicted_label` and `excluded_columns` given by name (Clarify takes an index too)."""
    resolved = dict(config)
    excluded = config.get("excluded_columns") or []
    resolved["excluded_columns"] = [column(df, c, f"excluded_columns[{i}]") for i, c in enumerate(excluded)]
    predicted = config.get("predicted_label")
    if isinstance(predicted, int) and not isinstance(predicted, bool):
        resolved["predicted_label"] = column(df, predicted, "predicted_label")
    return resolved


def features_of(config: dict, df: pd.DataFrame, label: str) -> pd.DataFrame:
    """The model's inputs: every column but the label, the excluded ones and the predictions, as numbers."""
    dropped = {label, *config.get("excluded_columns", []), str(config.get("predicted_label"))}
    features = df[[c for c in df.columns if c not in dropped]]
    words = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if words:
        raise AnalysisError(
            f"columns {words} are not numbers, and the model takes numbers — encode them, or list them in "
            "excluded_columns"
        )
    return features.astype(float)


def predictions(config: dict, df: pd.DataFrame, label: str, model: Booster | Endpoint | None) -> pd.Series | None:
    """The predicted labels: a column of the dataset (`predicted_label`), else the model's (see
    Endpoint.predicted), scores cut at `probability_threshold` (0.5)."""
    predicted = config.get("predicted_label")
    if isinstance(predicted, str) and predicted in df.columns:
        return df[predicted]
    if model is None:
        return None
    threshold = float(config.get("probability_threshold", 0.5))
    return pd.Series(model.predicted(features_of(config, df, label), threshold), index=df.index, name="predicted_label")


def bias(stage: str, config: dict, df: pd.DataFrame, parts: tuple, predicted: pd.Series | None) -> dict:
    import smclarify.bias.metrics as registry
    from smclarify.bias import report

    label, positive, facets, group = parts
    methods = (config.get("methods") or {}).get(f"{stage}_bias") or {}
    pre = stage == "pre_training"
    known = [f.__name__ for f in (registry.PRETRAINING_METRICS if pre else registry.POSTTRAINING_METRICS)]
    wanted = methods.get("methods", "all")
    # "all" leaves out the conditional metrics (CDDL, CDDPL) when there is no group_variable to condition on.
    metrics = [m for m in known if group or not m.startswith("CDD")] if wanted == "all" else _values(wanted)
    unknown = sorted(set(metrics) - set(known))
    if unknown:
        raise AnalysisError(f"methods.{stage}_bias.methods: {unknown} are not metrics Clarify has — use {known}")
    if not group and {"CDDL", "CDDPL"} & set(metrics):
        raise AnalysisError(f"methods.{stage}_bias.methods: CDDL and CDDPL need a group_variable — name its column")
    stage_type = report.StageType.PRE_TRAINING if pre else report.StageType.POST_TRAINING
    label_column = report.LabelColumn(label, df[label], positive)
    predicted_column = report.LabelColumn("predicted_label", predicted, positive) if predicted is not None else None
    out: dict = {"label": label, "label_value_or_threshold": ",".join(map(str, positive)), "facets": {}}
    for name, sensitive in facets:
        # The features smclarify sees (FT looks for neighbours among them): not the excluded columns,
        # nor a column of predictions.
        dropped = {*map(str, config.get("excluded_columns") or []), str(config.get("predicted_label"))} - {label, name}
        rows = report.bias_report(
            df.drop(columns=[c for c in df.columns if c in dropped]),
            report.FacetColumn(name, sensitive),
            label_column,
            stage_type,
            predicted_column,
            metrics=metrics,
            group_variable=df[group] if group else None,
        )
        out["facets"][name] = _plain(rows)
    return out


def _plain(value: object) -> object:
    """Plain JSON values all the way down: numpy scalars as Python's, NaN and infinities as strings
    (json.dumps writes bare NaN, which is no JSON)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def shap_values(
    config: dict, df: pd.DataFrame, label: str, model: Booster | Endpoint
) -> tuple[pd.DataFrame, float, str]:
    """Per-row SHAP values, the expected value, and which algorithm made them."""
    settings = (config.get("methods") or {}).get("shap") or {}
    features = features_of(config, df, label)
    if model.tree and settings.get("algorithm") != "kernel":
        import xgboost

        # XGBoost's own tree SHAP: the values shap's TreeExplainer gives for an XGBoost model (it asks
        # XGBoost for them), the expected value last, without importing shap (a second of the run).
        contributions = model.booster.predict(xgboost.DMatrix(features.values), pred_contribs=True)
        if contributions.ndim != 2:
            raise AnalysisError("methods.shap: the model scores several classes; SHAP values of a multiclass "
                                "model are not built — explain a binary or regression model")  # fmt: skip
        expected = float(contributions[0, -1]) if len(contributions) else 0.0
        return pd.DataFrame(contributions[:, :-1], columns=features.columns), expected, "tree"
    import shap
    baseline = settings.get("baseline")
    background = (
        pd.DataFrame(baseline, columns=features.columns).astype(float)
        if isinstance(baseline, list)
        else features.mean().to_frame().T
    )
    explainer = shap.KernelExplainer(
        lambda rows: model.scores(pd.DataFrame(rows, columns=features.columns), margin=True), background.values
    )
    samples = int(settings.get("num_samples", 100))
    values = explainer.shap_values(features.values, nsamples=samples, silent=True)
    return pd.DataFrame(values, columns=features.columns), float(np.ravel(explainer.expected_value)[0]), "kernel"


def aggregate(local: pd.DataFrame, method: str) -> dict[str, float]:
    if method not in AGG_METHODS:
        raise AnalysisError(f"methods.shap.agg_method: '{method}' is not one of {', '.join(AGG_METHODS)}")
    if method == "mean_abs":
        series = local.abs().mean()
    elif method == "median":
        series = local.median()
    else:
        series = (local**2).mean()
    return {str(k): float(v) for k, v in series.items()}


def _bars(title: str, values: dict[str, float]) -> str:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, max(1.6, 0.32 * len(values) + 0.8)))
    axis = figure.subplots()
    names = list(values)
    axis.barh(range(len(names)), [values[n] for n in names])
    axis.set_yticks(range(len(names)), [n.replace("$", r"\$") for n in names])
    axis.invert_yaxis()
    axis.axvline(0, color="black", linewidth=0.6)
    axis.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    buf = io.StringIO()
    figure.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    return f"<figure>{svg[svg.index('<svg') :]}<figcaption>{html.escape(title)}</figcaption></figure>"


def _shown(metric: dict) -> object:
    """A metric's value, or why smclarify could not compute it."""
    return metric["value"] if metric.get("value") is not None else metric.get("error", "")


def report_html(analysis: dict, title: str = "Clarify report") -> str:
    parts = [f"<h1>{html.escape(title)}</h1>"]
    for stage, heading in (("pre_training_bias_metrics", "Pre-training bias"),
                           ("post_training_bias_metrics", "Post-training bias")):  # fmt: skip
        section = analysis.get(stage)
        if not section:
            continue
        parts.append(f"<h2>{heading}</h2><p>Label {html.escape(section['label'])}, positive "
                     f"{html.escape(section['label_value_or_threshold'])}</p>")  # fmt: skip
        for facet, rows in section["facets"].items():
            for row in rows:
                values = {m["name"]: m["value"] for m in row["metrics"] if isinstance(m.get("value"), int | float)}
                title = f"{facet} = {row.get('value_or_threshold')}: {heading.lower()} metrics"
                if values:
                    parts.append(_bars(title, values))
                cells = "".join(
                    f"<tr><td>{html.escape(m['name'])}</td><td>{html.escape(m.get('description', ''))}</td>"
                    f"<td>{html.escape(str(_shown(m)))}</td></tr>"
                    for m in row["metrics"]
                )
                parts.append(f"<table><tr><th>metric</th><th>what</th><th>value</th></tr>{cells}</table>")
    for algorithm, explanation in (analysis.get("explanations") or {}).items():
        values = explanation["label0"]["global_shap_values"]
        ordered = dict(sorted(values.items(), key=lambda kv: -abs(kv[1]))[:30])
        parts.append(f"<h2>Explanations ({html.escape(algorithm)})</h2>")
        parts.append(_bars(f"global SHAP values ({explanation['label0'].get('agg_method', 'mean_abs')})", ordered))
    style = "body{font-family:sans-serif;max-width:60em;margin:2em auto}td,th{border:1px solid #ccc;padding:.2em .5em}"
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style>" \
           f"</head><body>{''.join(parts)}</body></html>"  # fmt: skip


def save(analysis: dict) -> None:
    (OUT / "analysis.json").write_text(json.dumps(_plain(analysis), indent=2, allow_nan=False))


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    analysis: dict = {"version": "1.0"}
    try:
        found = CONFIG if CONFIG.exists() else next(iter(sorted(CONFIG.parent.glob("*.json"))), CONFIG)
        try:
            config = json.loads(found.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise AnalysisError(f"analysis_config.json: cannot be read ({exc}) — give it as the config input") from None
        methods = config.get("methods") or {}
        df = read_dataset(config)
        config = resolve_columns(config, df)
        parts = check(config, df)
        print(f"dataset: {len(df)} rows, {len(df.columns)} columns", flush=True)
        model = load_model(config) if "post_training_bias" in methods or "shap" in methods else None
        if "pre_training_bias" in methods:
            started = time.monotonic()
            analysis["pre_training_bias_metrics"] = bias("pre_training", config, df, parts, None)
            save(analysis)
            print(f"pre-training bias: done in {time.monotonic() - started:.1f} s", flush=True)
        needs_predictions = "post_training_bias" in methods or "shap" in methods
        if needs_predictions and model is None and config.get("predicted_label") not in df.columns:
            raise AnalysisError(
                "post_training_bias and shap need predictions: name the model (predictor.model_name: a training "
                "job, or a model.tar.gz URI), or give a predicted_label column in the data"
            )
        if "post_training_bias" in methods:
            started = time.monotonic()
            predicted = predictions(config, df, parts[0], model)
            analysis["post_training_bias_metrics"] = bias("post_training", config, df, parts, predicted)
            save(analysis)
            print(f"post-training bias: done in {time.monotonic() - started:.1f} s", flush=True)
        if "shap" in methods:
            if model is None:
                raise AnalysisError("methods.shap: needs the model — name it as predictor.model_name")
            started = time.monotonic()
            local, expected, algorithm = shap_values(config, df, parts[0], model)
            agg = (methods.get("shap") or {}).get("agg_method", "mean_abs")
            analysis.setdefault("explanations", {})[f"{algorithm}_shap"] = {
                "label0": {"global_shap_values": aggregate(local, agg), "expected_value": expected, "agg_method": agg}
            }
            if (methods.get("shap") or {}).get("save_local_shap_values", True):
                (OUT / "explanations_shap").mkdir(exist_ok=True)
                local.to_csv(OUT / "explanations_shap" / "out.csv", index=False)
            save(analysis)
            print(f"{algorithm} SHAP: {len(local)} rows in {time.monotonic() - started:.1f} s", flush=True)
        report = methods.get("report") or {}  # Clarify's: the report's file name and title
        name = Path(str(report.get("name") or "")).name or "report"  # a file name, never a path out of OUT
        (OUT / f"{name}.html").write_text(report_html(analysis, str(report.get("title") or "Clarify report")))
        return 0
    except AnalysisError as exc:
        message = str(exc)
    except Exception as exc:  # noqa: BLE001 - whatever broke, the reason is recorded
        message = f"{type(exc).__name__}: {exc}"
    save(analysis)
    (OUT / "failure").write_text(message)
    if MESSAGE.parent.is_dir():  # run as a processing job: its ExitMessage, and so its FailureReason
        MESSAGE.write_text(message)
    print(f"analysis failed: {message}", file=sys.stderr, flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
