"""A shared algorithm: its specification with its image pinned, as one document another team imports.

`dockyard algorithms export` fills in the image's registry digest and writes the document (the
snake_case specification, as `dockyard algorithms create` reads it) to a file, or publishes it
next to the image: a one-file image (`FROM scratch`, the document as /algorithm.json and as its
`dockyard.algorithm` label) in the image's own repository, tagged `algorithm.NAME.VERSION`.
`dockyard algorithms import` reads either back, checks that the registry serves the pinned digest,
and registers it; a job pulls the image by that digest and checks what it got.
"""

from __future__ import annotations

import re
from typing import Any

from dockyard.algorithm_spec import AlgorithmSpec
from dockyard.errors import FieldProblem, JobSpecError

ARTIFACT_LABEL = "dockyard.algorithm"
ARTIFACT_FILE = "algorithm.json"
DIGEST_FIELD = "training_specification.training_image_digest"
IMAGE_FIELD = "training_specification.training_image"
_NOT_IN_TAG = re.compile(r"[^A-Za-z0-9_.-]")  # a tag is [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}


def repository(image: str) -> str:
    """An image reference without its tag or digest: registry.host:5000/team/name:1 -> registry.host:5000/team/name."""
    head, _, last = image.split("@", 1)[0].rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]


def artifact_reference(algorithm: AlgorithmSpec) -> str:
    """Where `export --push` publishes the algorithm: its image's repository, tagged
    algorithm.NAME.VERSION (a name has no dots, so no two algorithms share a tag)."""
    version = _NOT_IN_TAG.sub("-", algorithm.algorithm_version)
    tag = f"algorithm.{algorithm.algorithm_name}.{version}"[:128]
    return f"{repository(algorithm.training_specification.training_image)}:{tag}"


def package(algorithm: AlgorithmSpec, digest: str) -> dict[str, Any]:
    """The shared document: the algorithm's specification, its image pinned at `digest`."""
    pinned = algorithm.training_specification.model_copy(update={"training_image_digest": digest})
    return algorithm.model_copy(update={"training_specification": pinned}).model_dump(mode="json", exclude_none=True)


def digest_refused(algorithm: AlgorithmSpec, problem: str, fix: str) -> JobSpecError:
    """An imported algorithm's image digest refused, naming the field, the algorithm, the problem and the fix."""
    return JobSpecError([FieldProblem(DIGEST_FIELD, f"algorithm {algorithm.algorithm_name}: {problem}", fix)])


def pinned_digest(algorithm: AlgorithmSpec) -> str:
    """The digest an imported algorithm pins its image at.

    Raises:
        JobSpecError: it pins none, or not as a registry writes a digest.
    """
    digest = algorithm.training_specification.training_image_digest
    if digest is None:
        raise digest_refused(
            algorithm,
            "required to import an algorithm (it pins the exact image its publisher exported)",
            "import the document `dockyard algorithms export` wrote, which fills it in",
        )
    if digest != digest.lower():
        raise digest_refused(
            algorithm, f"'{digest}' is not as registries write digests", "write it in lowercase, as exported"
        )
    return digest
