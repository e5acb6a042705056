"""A shared algorithm's document and where it is published; the pinned digest required at import
and checked at pull."""

from __future__ import annotations

import pytest

from dockyard.algorithm_package import artifact_reference, package, pinned_digest, repository
from dockyard.errors import InfraError, JobSpecError
from dockyard.loading import build_algorithm
from tasks.pull_image import check_pinned
from tests.unit.test_algorithm_spec import REQUEST

DIGEST = "sha256:" + "ab" * 32


def test_the_document_is_the_specification_pinned_and_published_beside_its_image() -> None:
    algorithm = build_algorithm(REQUEST)
    doc = package(algorithm, DIGEST)
    assert doc["training_specification"]["training_image_digest"] == DIGEST
    assert build_algorithm(doc) == algorithm.model_copy(
        update={"training_specification": algorithm.training_specification.model_copy(
            update={"training_image_digest": DIGEST})}
    )  # fmt: skip
    assert artifact_reference(algorithm) == "vendor/scorer:algorithm.scorer.1"
    odd = algorithm.model_copy(update={"algorithm_version": "2.0+build 7"})
    assert artifact_reference(odd) == "vendor/scorer:algorithm.scorer.2.0-build-7"
    assert repository("registry.host:5000/team/name:1") == "registry.host:5000/team/name"
    assert repository(f"localhost:5000/name@{DIGEST}") == "localhost:5000/name"


def test_an_imported_algorithm_must_pin_its_image_as_a_registry_writes_a_digest() -> None:
    required = r"training_specification\.training_image_digest: algorithm scorer: required"
    with pytest.raises(JobSpecError, match=required):
        pinned_digest(build_algorithm(REQUEST))
    upper = build_algorithm(package(build_algorithm(REQUEST), DIGEST.upper()))
    with pytest.raises(JobSpecError, match="write it in lowercase"):
        pinned_digest(upper)
    assert pinned_digest(build_algorithm(package(build_algorithm(REQUEST), DIGEST))) == DIGEST


def test_a_pinned_image_is_checked_at_pull_by_its_id_or_its_registry_digest() -> None:
    check_pinned("scorer", DIGEST, "r/a@" + DIGEST, ["sha256:" + "cd" * 32, "r/a@" + DIGEST])
    check_pinned("scorer", DIGEST, DIGEST, [DIGEST])
    other = f"algorithm scorer pins its image at {DIGEST}, but the image obtained as r/a@"
    with pytest.raises(InfraError, match=other):
        check_pinned("scorer", DIGEST, "r/a@" + DIGEST, ["sha256:" + "cd" * 32, "r/a@sha256:" + "ef" * 32])
    with pytest.raises(InfraError, match="is not here"):
        check_pinned("scorer", DIGEST, "r/a@" + DIGEST, [])
