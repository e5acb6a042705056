"""Tuning: search quality by strategy, and what orchestration costs a trial.

(a) Search quality: the probe container reports the Branin function of its
    hyperparameters x1, x2 (plus 10/epoch and Gaussian noise), one loss line per
    epoch. For each seed, a tuning job of N trials per strategy (Random,
    Bayesian = Optuna's TPE, Hyperband = TPE + Optuna's HyperbandPruner). We
    report the regret of the best trial (true Branin at its hyperparameters
    minus the global minimum 0.397887), the epochs trained, and wall time.
(b) Overhead per trial: M one-epoch trials as a tuning job (1 at a time), the
    same M training jobs run back to back with `python -m flows.train`, and
    the same M containers back to back with `docker run` (the floor).

    .venv/bin/python benchmarks/tuning.py [--trials 12] [--seeds 3] [--write]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from startup import build_image  # the sibling script (this folder is on sys.path)

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "dockyard-bench/probe:1"
BRANIN_MIN = 0.397887
STRATEGIES = ("Random", "Bayesian", "Hyperband")


def branin(x1: float, x2: float) -> float:
    return (
        (x2 - 5.1 / (4 * math.pi**2) * x1**2 + 5 / math.pi * x1 - 6) ** 2
        + 10 * (1 - 1 / (8 * math.pi)) * math.cos(x1)
        + 10
    )


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return elapsed, result.stdout


def tuning_doc(work: Path, name: str, strategy: str, trials: int, parallel: int, seed: int, epochs: int) -> Path:
    ranges: dict[str, Any] = {
        "continuous_parameter_ranges": [
            {"name": "x1", "min_value": -5, "max_value": 10, "scaling_type": "Linear"},
            {"name": "x2", "min_value": 0, "max_value": 15, "scaling_type": "Linear"},
        ]
    }
    doc = {
        "hyper_parameter_tuning_job_name": name,
        "hyper_parameter_tuning_job_config": {
            "strategy": strategy,
            "hyper_parameter_tuning_job_objective": {"type": "Minimize", "metric_name": "loss"},
            "resource_limits": {"max_number_of_training_jobs": trials, "max_parallel_training_jobs": parallel},
            "parameter_ranges": ranges,
            "random_seed": seed,
        },
        "training_job_definition": {
            "algorithm_specification": {
                "training_image": IMAGE,
                "metric_definitions": [{"name": "loss", "regex": r"loss=(-?[0-9.]+)"}],
            },
            "static_hyper_parameters": {
                "mode": "branin",
                "epochs": str(epochs),
                "epoch_seconds": "0.5" if epochs > 1 else "0",
                "noise": "0.5",
                "seed": str(seed),
            },
            "output_data_config": {"s3_output_path": f"file://{work}/out"},
        },
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def epochs_trained(home: Path, body: dict[str, Any]) -> int:
    """Every trial's loss values (one an epoch), read from the job store."""
    from dockyard.settings import Settings
    from infra.job_store import open_store

    store = open_store(Settings.from_env({"DOCKYARD_HOME": str(home)}))
    return sum(len(store.metrics(s["TrainingJobName"])) for s in body["TrainingJobSummaries"])


def search_quality(work: Path, env: dict[str, str], trials: int, seeds: int) -> tuple[str, str]:
    results: dict[str, list[tuple[float, int, float]]] = {s: [] for s in STRATEGIES}
    for seed in range(seeds):
        for strategy in STRATEGIES:
            name = f"{strategy.lower()}-{seed}"
            spec = tuning_doc(work, name, strategy, trials, 2, seed, epochs=9)
            wall, out = timed([sys.executable, "-m", "flows.tune", str(spec), "--json"], env)
            body = json.loads(out)
            hps = body["BestTrainingJob"]["TunedHyperParameters"]
            regret = branin(float(hps["x1"]), float(hps["x2"])) - BRANIN_MIN
            results[strategy].append((regret, epochs_trained(work / "home", body), wall))
            print(f"{name}: regret {regret:.3f}, {results[strategy][-1][1]} epochs, {wall:.0f} s", file=sys.stderr)
    lines = [
        "| strategy | median regret | regret per seed | epochs trained (median) | wall s (median) |",
        "|---|---|---|---|---|",
    ]
    for strategy, rows in results.items():
        regrets = [r for r, _, _ in rows]
        lines.append(
            f"| {strategy} | {statistics.median(regrets):.3f} | {', '.join(f'{r:.3f}' for r in regrets)} "
            f"| {statistics.median(e for _, e, _ in rows):.0f} | {statistics.median(w for _, _, w in rows):.0f} |"
        )
    note = (
        f"{trials} trials per tuning job, 2 in parallel, 9 epochs of 0.5 s per full trial, noise σ = 0.5, "
        f"seeds 0..{seeds - 1}. Regret = Branin(best trial's x1, x2) − 0.397887; lower is better."
    )
    return "\n".join(lines), note


def floor_run(work: Path, index: int, hyperparameters: dict[str, str]) -> float:
    """One trial's container alone: `docker run` of the probe with its config and a model folder."""
    config = work / f"config-{index}"
    config.mkdir()
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (config / "resourceconfig.json").write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}))
    (work / f"model-{index}").mkdir()
    mounts = ["-v", f"{config}:/opt/ml/input/config:ro", "-v", f"{work}/model-{index}:/opt/ml/model"]
    start = time.perf_counter()
    subprocess.run(["docker", "run", "--rm", *mounts, IMAGE, "train"], check=True, capture_output=True)
    return time.perf_counter() - start


def overhead(work: Path, env: dict[str, str], trials: int) -> tuple[str, str]:
    spec = tuning_doc(work, "overhead", "Random", trials, 1, 0, epochs=1)
    definition = yaml.safe_load(spec.read_text())["training_job_definition"]
    static = definition.pop("static_hyper_parameters")

    def train_by_hand(name: str, hps: dict[str, str]) -> float:
        path = work / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**definition, "training_job_name": name, "hyperparameters": hps}))
        return timed([sys.executable, "-m", "flows.train", str(path)], env)[0]

    train_by_hand("warm-up", {**static, "x1": "0", "x2": "0"})  # starts the local Prefect server once
    tuned, out = timed([sys.executable, "-m", "flows.tune", str(spec), "--json"], env)
    by_hand = floor = 0.0
    for i, s in enumerate(json.loads(out)["TrainingJobSummaries"]):
        hps = {**static, **s["TunedHyperParameters"]}
        by_hand += train_by_hand(f"by-hand-{i}", hps)
        floor += floor_run(work, i, hps)
    lines = ["| what | total s | per trial s | x floor |", "|---|---|---|---|"]
    for label, total in (
        ("floor: docker run, back to back", floor),
        ("python -m flows.train, back to back", by_hand),
        ("python -m flows.tune, 1 at a time", tuned),
    ):
        lines.append(f"| {label} | {total:.1f} | {total / trials:.2f} | {total / floor:.1f} |")
    note = (
        f"{trials} one-epoch Branin trials. The tuning job's total includes its own start (Prefect, "
        f"Optuna, validation) once; per-trial overhead of the tuning flow over the floor: "
        f"{(tuned - floor) / trials:.2f} s."
    )
    return "\n".join(lines), note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--overhead-trials", type=int, default=6)
    parser.add_argument("--write", action="store_true", help="write the figures to benchmarks/RESULTS.md")
    args = parser.parse_args()
    build_image(IMAGE, ROOT / "tests/images/probe")
    work = Path(tempfile.mkdtemp(prefix="dockyard-bench-tuning-"))
    env = {**os.environ, "DOCKYARD_HOME": str(work / "home")}
    try:
        overhead_table, overhead_note = overhead(work, env, args.overhead_trials)
        quality_table, quality_note = search_quality(work, env, args.trials, args.seeds)
    finally:
        subprocess.run(
            [sys.executable, "-c", f"from infra.prefect_api import stop_server; stop_server('{work}/home')"],
            cwd=ROOT,
            check=True,
        )
        shutil.rmtree(work, ignore_errors=True)
    print(f"{quality_table}\n\n{quality_note}\n\n{overhead_table}\n\n{overhead_note}")
    if args.write:
        from startup import write_section  # the sibling script (this folder is on sys.path)

        command = " ".join(["python", "benchmarks/tuning.py", *sys.argv[1:]])
        write_section("tuning-quality", "Tuning: search quality on Branin", quality_table, quality_note, command)
        write_section(
            "tuning-overhead", "Tuning: orchestration overhead per trial", overhead_table, overhead_note, command
        )


if __name__ == "__main__":
    main()
