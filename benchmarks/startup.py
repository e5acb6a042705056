"""Whole-process time of one do-nothing training job, side by side:

- floor:     `docker run --rm IMAGE train` of the same image
- dockyard:  `python -m flows.train job.yaml` (local Prefect server already up)
- sagemaker: SageMaker's local mode (`sagemaker<3`, instance_type='local'),
             when --sagemaker-python names a Python that has it
- baseline:  dockyard as of an earlier commit (--baseline REF), its sources
             exported from git and run with the same virtualenv and a home of its own

    .venv/bin/python benchmarks/startup.py [--runs 5] [--sagemaker-python PY] [--baseline REF] [--write]

--write replaces the startup section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "dockyard-bench/noop:1"
BASE = os.environ.get("DOCKYARD_BASE_IMAGE", "dockyard/python-base:bookworm")


def build_image(tag: str, context: Path) -> None:
    """Build a benchmark image on the base image (cached layers make a rebuild quick)."""
    subprocess.run(
        ["docker", "build", "-q", "--build-arg", f"BASE_IMAGE={BASE}", "-t", tag, str(context)],
        check=True,
        capture_output=True,
    )


def timed(cmd: list[str], env: dict[str, str], cwd: Path = ROOT) -> float:
    start = time.perf_counter()
    result = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return elapsed


def job_yaml(folder: Path, data: Path) -> Path:
    path = folder / "job.yaml"
    path.write_text(
        f"base_job_name: bench-noop\nalgorithm_specification:\n  training_image: {IMAGE}\n"
        f"input_data_config:\n  - channel_name: train\n    data_source:\n      s3_data_source:\n"
        f"        s3_uri: file://{data}\noutput_data_config:\n  s3_output_path: file://{folder}/out\n"
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sagemaker-python", help="a Python with sagemaker<3 installed")
    parser.add_argument("--baseline", metavar="REF", help="also time dockyard as of this git commit")
    parser.add_argument("--write", action="store_true", help="write the figures to benchmarks/RESULTS.md")
    args = parser.parse_args()
    build_image(IMAGE, ROOT / "benchmarks/noop")
    work = Path(tempfile.mkdtemp(prefix="dockyard-bench-"))
    data = work / "data"
    data.mkdir()
    (data / "a.csv").write_text("1,2\n")
    env = {**os.environ, "DOCKYARD_HOME": str(work / "home")}
    spec = job_yaml(work, data)
    train = [sys.executable, "-m", "flows.train", str(spec)]
    first = timed(train, env)  # starts the local Prefect server once
    rows: dict[str, list[float]] = {"floor: docker run": [], "dockyard: python -m flows.train": []}
    sm = "SageMaker local mode"
    if args.sagemaker_python:
        rows[sm] = []
    old, old_env, old_name = work / "baseline", {**env, "DOCKYARD_HOME": str(work / "baseline-home")}, ""
    if args.baseline:
        old_name = f"dockyard at {args.baseline}: python -m flows.train"
        old.mkdir()
        archive = subprocess.run(["git", "archive", args.baseline], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        rows[old_name] = []
        timed(train, old_env, cwd=old)  # its own home: starts its own Prefect server once
    for _ in range(args.runs):
        rows["floor: docker run"].append(timed(["docker", "run", "--rm", IMAGE, "train"], env))
        rows["dockyard: python -m flows.train"].append(timed(train, env))
        if args.baseline:
            rows[old_name].append(timed(train, old_env, cwd=old))
        if args.sagemaker_python:
            sm_env = {**env, "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}
            rows[sm].append(
                timed(
                    [
                        args.sagemaker_python,
                        str(ROOT / "benchmarks/noop/sagemaker_local.py"),
                        str(data),
                        str(work / "sm-out"),
                    ],
                    sm_env,
                )
            )
    for home in ("home", "baseline-home"):
        subprocess.run(
            [sys.executable, "-c", f"from infra.prefect_api import stop_server; stop_server('{work}/{home}')"],
            cwd=ROOT,
            check=True,
        )
    shutil.rmtree(work, ignore_errors=True)
    floor = statistics.median(rows["floor: docker run"])
    ours = statistics.median(rows["dockyard: python -m flows.train"])
    lines = ["| what | median s | min s | x floor | x dockyard |", "|---|---|---|---|---|"]
    for name, values in rows.items():
        med = statistics.median(values)
        lines.append(f"| {name} | {med:.2f} | {min(values):.2f} | {med / floor:.1f} | {med / ours:.2f} |")
    table = "\n".join(lines)
    note = (
        f"First dockyard run in a fresh DOCKYARD_HOME, starting the local Prefect server: {first:.1f} s. "
        f"{args.runs} runs each, interleaved."
    )
    print(table + "\n\n" + note)
    if args.write:
        write_results(table, note, " ".join(["python", "benchmarks/startup.py", *sys.argv[1:]]))


def write_results(table: str, note: str, command: str) -> None:
    write_section("startup", "Whole-process time of a do-nothing job", table, note, command)


def run_as_user(module: str, spec: dict[str, Any], path: Path, env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    """`python -m MODULE PATH --json` on `spec` (written to `path`), as a user runs a job: its wall
    time and the final record it prints. Exits naming the job when the job does not complete."""
    path.write_text(json.dumps(spec))
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", module, str(path), "--json"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(
            f"{path.name} ended with exit code {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    return wall, json.loads(done.stdout)


def write_section(key: str, title: str, table: str, note: str, command: str) -> None:
    """Replace (or add) one marked section of benchmarks/RESULTS.md."""
    path = ROOT / "benchmarks" / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    start, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    section = (
        f"{start}\n## {title}\n\n"
        f"`{command}` on {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores:\n\n{table}\n\n{note}\n{end}"
    )
    if start in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)


if __name__ == "__main__":
    main()
