"""Network isolation, tried as an attacker would: a job with enable_network_isolation
reaches its peers and nothing else, not even a server listening on this machine; a job
without it reaches the host's open services but not dockyard's own."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator

import pytest

from tests.integration.helpers import local, members, probe_job, run_job

pytestmark = pytest.mark.integration


@pytest.fixture
def host_server() -> Iterator[int]:
    """A TCP server on every address of this machine; its port."""
    server = socket.create_server(("0.0.0.0", 0))
    server.settimeout(0.5)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                server.accept()[0].close()
            except TimeoutError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    done.set()
    thread.join()
    server.close()


def host_addresses() -> list[str]:
    """This machine's addresses a container could aim at: the default bridge's and the first of `hostname -I`."""
    bridge = subprocess.run(
        ["docker", "network", "inspect", "bridge", "-f", "{{(index .IPAM.Config 0).Gateway}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    first = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=True).stdout.split()[:1]
    return [bridge, *first]


def reach_reports(body: dict[str, object]) -> dict[str, dict[str, object]]:
    artifacts = body["ModelArtifacts"]
    assert isinstance(artifacts, dict)
    files = members(local(artifacts["S3ModelArtifacts"]))
    return {
        name.removeprefix("reach-").removesuffix(".json"): json.loads(data)
        for name, data in files.items()
        if name.startswith("reach-")
    }


def test_an_isolated_job_reaches_its_peers_and_nothing_on_the_host(
    home: str, test_images: dict[str, str], host_server: int
) -> None:
    # dockyard's own services: the Prefect API, and PostgreSQL (the job store), on loopback by default.
    own_ports = [int(os.environ["PREFECT_API_URL"].split(":")[2].split("/")[0]), 5432]
    addresses = ["gateway", *host_addresses()]
    ours = [f"{a}:{port}" for a in addresses for port in own_ports]
    targets = [*(f"{a}:{host_server}" for a in addresses), "169.254.169.254:80", *ours]
    hps = {"targets": ",".join(targets)}

    # Not isolated: the job's bridge gateway is this machine, and the server answers there;
    # dockyard's own services, listening on loopback, do not.
    open_body = run_job(probe_job(home, test_images["probe"], "reach", hyperparameters=hps))
    assert open_body["TrainingJobStatus"] == "Completed", open_body.get("FailureReason")
    reached = reach_reports(open_body)["algo-1"]["targets"]
    assert reached[f"gateway:{host_server}"] == "connected"
    assert not any(reached[t] == "connected" for t in ours), reached

    job = probe_job(home, test_images["probe"], "reach", hyperparameters=hps, instance_count=2)
    job["enable_network_isolation"] = True
    body = run_job(job)
    assert body["TrainingJobStatus"] == "Completed", body.get("FailureReason")
    reports = reach_reports(body)
    assert set(reports) == {"algo-1", "algo-2"}
    for me, other in (("algo-1", "algo-2"), ("algo-2", "algo-1")):
        assert reports[me]["gateway"], reports[me]  # the job bridge's own address was tried
        assert reports[me]["peers"] == {other: other}
        reached = reports[me]["targets"]
        assert isinstance(reached, dict) and set(reached) == set(targets)
        assert not any(result == "connected" for result in reached.values()), reached
