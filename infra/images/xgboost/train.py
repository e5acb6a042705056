#!/usr/bin/env python3
"""dockyard's built-in XGBoost: `train` under SageMaker's container contract.

Reads CSV (label in the first column, no header) from the train and optional
validation channels, trains with the job's hyperparameters, prints
SageMaker-style evaluation lines ("[3]#011train-auc:0.99#011validation-auc:0.98"
with real tabs), writes checkpoints to /opt/ml/checkpoints every
`checkpoint_frequency` rounds and resumes from the newest one, and saves the
model to /opt/ml/model/xgboost-model. A failure is written to
/opt/ml/output/failure before exiting non-zero.
"""

from __future__ import annotations

import glob
import json
import os
import re
import signal
import sys
import traceback

ML = "/opt/ml"
CONFIG = f"{ML}/input/config"
# Where checkpoints go: checkpointconfig.json's LocalPath when the job has a
# checkpoint_config, else the contract's default folder.
CHECKPOINTS = f"{ML}/checkpoints"
KEEP_CHECKPOINTS = 5
# Hyperparameters that steer this script rather than xgboost itself.
OWN = {"num_round", "early_stopping_rounds", "checkpoint_frequency"}


class Stop(Exception):
    pass


SIGTERM_SEEN = []


def on_sigterm(signum, frame):  # noqa: ARG001
    # Finish the round in progress, checkpoint it, then stop (see Checkpoint).
    SIGTERM_SEEN.append(True)


def read_json(path, default):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default


def load_channel(name):
    import numpy as np

    files = sorted(
        p for p in glob.glob(f"{ML}/input/data/{name}/**/*", recursive=True) if os.path.isfile(p)
    )
    if not files:
        return None
    parts = [np.loadtxt(p, delimiter=",", ndmin=2) for p in files]
    data = np.vstack(parts)
    return data[:, 1:], data[:, 0]


def params_from(hps):
    params = {}
    for key, value in hps.items():
        if key in OWN:
            continue
        if key == "eval_metric":
            params[key] = [m.strip() for m in value.split(",") if m.strip()]
            continue
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                continue
        params[key] = value
    params.setdefault("nthread", os.cpu_count() or 1)
    return params


def newest_checkpoint():
    best = None
    for path in glob.glob(f"{CHECKPOINTS}/xgboost-checkpoint.*"):
        m = re.search(r"xgboost-checkpoint\.(\d+)$", path)
        if m and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), path)
    return best


def main():
    import xgboost as xgb

    global CHECKPOINTS
    signal.signal(signal.SIGTERM, on_sigterm)
    CHECKPOINTS = read_json(f"{CONFIG}/checkpointconfig.json", {}).get("LocalPath", CHECKPOINTS)
    hps = read_json(f"{CONFIG}/hyperparameters.json", {})
    num_round = int(hps.get("num_round", "10"))
    every = int(hps.get("checkpoint_frequency", "5"))
    train = load_channel("train")
    if train is None:
        raise ValueError("channel 'train' is empty: give it CSV files, label in the first column")
    dtrain = xgb.DMatrix(train[0], label=train[1])
    evals = [(dtrain, "train")]
    validation = load_channel("validation")
    if validation is not None:
        evals.append((xgb.DMatrix(validation[0], label=validation[1]), "validation"))

    start_model, done = None, 0
    found = newest_checkpoint()
    if found:
        done, path = found
        start_model = xgb.Booster(model_file=path)
        print(f"resuming from checkpoint {path} at round {done} of {num_round}", flush=True)

    class Checkpoint(xgb.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log):
            rounds = done + epoch + 1
            stopping = bool(SIGTERM_SEEN)
            if os.path.isdir(CHECKPOINTS) and (rounds % every == 0 or rounds == num_round or stopping):
                # Written whole under a temporary name (.ubj picks the format), then renamed,
                # so a checkpoint sync never sees half a file.
                tmp = f"{CHECKPOINTS}/.xgboost-checkpoint.{rounds}.ubj"
                model.save_model(tmp)
                os.replace(tmp, f"{CHECKPOINTS}/xgboost-checkpoint.{rounds}")
                for old in sorted(glob.glob(f"{CHECKPOINTS}/xgboost-checkpoint.*"),
                                  key=lambda p: int(p.rsplit(".", 1)[1]))[:-KEEP_CHECKPOINTS]:
                    os.remove(old)
            if stopping:
                print(f"SIGTERM: checkpointed round {rounds} of {num_round}, stopping", flush=True)
                raise Stop("stopped by SIGTERM")
            return False

    class Report(xgb.callback.TrainingCallback):
        # One SageMaker-style line per round, round numbers continuing across resumes.
        def after_iteration(self, model, epoch, evals_log):
            fields = [f"{data}-{metric}:{values[-1]:.5f}"
                      for data, metrics in evals_log.items() for metric, values in metrics.items()]
            print(f"[{done + epoch}]\t" + "\t".join(fields), flush=True)
            return False

    remaining = max(num_round - done, 0)
    early = hps.get("early_stopping_rounds")
    booster = xgb.train(
        params_from(hps), dtrain, num_boost_round=remaining, evals=evals, xgb_model=start_model,
        early_stopping_rounds=int(early) if early else None, verbose_eval=False,
        callbacks=[Report(), Checkpoint()],
    ) if remaining else start_model
    os.makedirs(f"{ML}/model", exist_ok=True)
    booster.save_model(f"{ML}/model/xgboost-model.ubj")
    os.replace(f"{ML}/model/xgboost-model.ubj", f"{ML}/model/xgboost-model")
    print(f"saved model after {num_round} rounds to {ML}/model/xgboost-model", flush=True)


if __name__ == "__main__":
    try:
        main()
    except Stop as stop:
        print(str(stop), file=sys.stderr, flush=True)
        sys.exit(143)
    except Exception as exc:  # noqa: BLE001 - everything becomes the failure reason
        traceback.print_exc()
        os.makedirs(f"{ML}/output", exist_ok=True)
        with open(f"{ML}/output/failure", "w") as f:
            f.write(f"{type(exc).__name__}: {exc}")
        sys.exit(1)
