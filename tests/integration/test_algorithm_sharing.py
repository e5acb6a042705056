"""Sharing an algorithm: one team exports it (to a file, and to the registry beside its image),
another imports it into a dockyard of its own, without the image, and trains it there by name;
the pinned digest is checked at import and at pull, and a tampered document is refused."""

from __future__ import annotations

import json
from pathlib import Path

import docker
import pytest
import yaml

from tests.integration.helpers import store_of, unique, write_files
from tests.integration.test_algorithms import dockyard, job, run, specification

pytestmark = pytest.mark.integration


@pytest.mark.usefixtures("home")
def test_an_exported_algorithm_is_imported_elsewhere_and_trains_by_name_its_digest_checked(
    registry: str, test_images: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = docker.from_env()
    repository = f"{registry}/team/{unique('probe')}"
    image = f"{repository}:1"
    engine.images.get(test_images["probe"]).tag(image)
    for line in engine.images.push(image, stream=True, decode=True):
        assert "error" not in line, line
    name = unique("shared")
    path = tmp_path / "algorithm.yaml"
    path.write_text(yaml.safe_dump(specification(image, name)))
    assert dockyard("algorithms", "create", str(path)).returncode == 0

    # The publisher: to a file, and to the registry beside the image.
    exported = tmp_path / "shared.json"
    written = dockyard("algorithms", "export", name, "--to", str(exported))
    assert written.returncode == 0, written.stderr
    doc = json.loads(exported.read_text())
    digest = doc["training_specification"]["training_image_digest"]
    assert f"{repository}@{digest}" in engine.images.get(image).attrs["RepoDigests"]
    published = dockyard("algorithms", "export", name, "--push")
    assert published.returncode == 0, published.stderr
    reference = f"{repository}:algorithm.{name}.1"
    assert reference in published.stdout
    # An image never pushed has no registry digest to pin.
    local = unique("local")
    path.write_text(yaml.safe_dump(specification(test_images["probe"], local)))
    assert dockyard("algorithms", "create", str(path)).returncode == 0
    refused = dockyard("algorithms", "export", local, "--to", str(tmp_path / "local.json"))
    assert refused.returncode == 1 and "push it first" in refused.stderr, refused.stderr
    engine.images.remove(image)  # the other team has no copy: import checks, and the job pulls, at the registry

    data = tmp_path / "data"
    write_files(data, {"train.csv": "1,2\n"})
    for source in (str(exported), reference):
        other = tmp_path / unique("other-team")
        other.mkdir()
        monkeypatch.setenv("DOCKYARD_HOME", str(other))
        imported = dockyard("algorithms", "import", source)
        assert imported.returncode == 0, imported.stderr
        done = run("flows.train", job(name, str(other), data), tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        body = json.loads(done.stdout)
        assert body["TrainingJobStatus"] == "Completed", body.get("FailureReason")
        log = (other / "jobs" / body["TrainingJobName"] / "job.log").read_text()
        assert f"pulling {repository}@{digest}" in log and f"checked: {repository}@{digest} is the image" in log
        engine.images.remove(f"{repository}@{digest}")  # gone again for the next import

    # A tampered document: another digest is refused, naming the field and the algorithm; nothing stored.
    other = tmp_path / unique("tampered")
    other.mkdir()
    monkeypatch.setenv("DOCKYARD_HOME", str(other))
    tampered = tmp_path / "tampered.json"
    forged = f"sha256:{'0' * 64}"
    tampered.write_text(exported.read_text().replace(digest, forged))
    refused = dockyard("algorithms", "import", str(tampered))
    assert refused.returncode == 2, refused.stderr
    assert f"training_specification.training_image_digest: algorithm {name}: " in refused.stderr
    assert f"{repository}@{forged}" in refused.stderr
    assert store_of(str(other)).algorithm(name) is None
