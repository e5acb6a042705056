"""Script mode: the job's own training script, run by a framework image's toolkit.

SageMaker's framework images (and dockyard/pytorch) run `train` from AWS's
sagemaker-training toolkit, which reads two hyperparameters: `sagemaker_program`
(the entry point, a path inside the code folder) and `sagemaker_submit_directory`
(where the code is: an s3:// sourcedir.tar.gz as the SageMaker SDK uploads it,
or a local folder). A job names its code either way: dockyard's own
`source_dir` / `entry_point` fields, or those hyperparameters as the SDK sends
them (JSON-encoded strings).

dockyard fetches the code on the host and mounts it read-only at /opt/ml/code;
the container's hyperparameters.json then names /opt/ml/code, which the toolkit
takes as already in place, so the container needs no S3 access of its own.
"""

from __future__ import annotations

import json
import posixpath

from pydantic import BaseModel, ConfigDict

from dockyard.spec import TrainingJobSpec

CODE_DIR = "/opt/ml/code"
PROGRAM = "sagemaker_program"
SUBMIT_DIRECTORY = "sagemaker_submit_directory"


class CodeSource(BaseModel):
    model_config = ConfigDict(frozen=True)

    uri: str  # file:// or s3://: a folder, or a .tar.gz to unpack
    field: str  # the spec field it came from, for errors

    @property
    def is_archive(self) -> bool:
        return self.uri.endswith((".tar.gz", ".tgz"))


def decoded(value: str | None) -> str | None:
    """A toolkit hyperparameter's value: the SDK JSON-encodes strings ('"train.py"'); plain text is taken as is."""
    if value is None:
        return None
    try:
        loaded = json.loads(value)
    except ValueError:
        return value
    return loaded if isinstance(loaded, str) else value


def as_uri(location: str) -> str:
    """A local path as a file:// URI; URIs stay as they are."""
    return location if "://" in location else f"file://{location}"


def code_source(spec: TrainingJobSpec) -> CodeSource | None:
    """Where the job's code is, when it has code for dockyard to stage."""
    if spec.source_dir:
        return CodeSource(uri=as_uri(spec.source_dir), field="source_dir")
    submitted = decoded(spec.hyperparameters.get(SUBMIT_DIRECTORY))
    if submitted and submitted.rstrip("/") != CODE_DIR:
        return CodeSource(uri=as_uri(submitted), field=f"hyperparameters.{SUBMIT_DIRECTORY}")
    return None


def container_hyperparameters(spec: TrainingJobSpec) -> dict[str, str]:
    """The hyperparameters.json the container sees: the toolkit's two pointing at the staged code."""
    hyperparameters = dict(spec.hyperparameters)
    if spec.entry_point:
        hyperparameters[PROGRAM] = json.dumps(spec.entry_point)
    if code_source(spec):
        hyperparameters[SUBMIT_DIRECTORY] = json.dumps(CODE_DIR)
    return hyperparameters


def entry_point_problem(entry_point: str) -> str | None:
    """What is wrong with an entry point path, or None."""
    normal = posixpath.normpath(entry_point)
    if entry_point.startswith("/") or normal.startswith(".."):
        return f"must be a path inside source_dir, like train.py or src/train.py — got '{entry_point}'"
    return None
