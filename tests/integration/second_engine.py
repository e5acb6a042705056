"""A second Docker engine on this machine, as a second host of a fleet: dockerd in a
network namespace of its own (its own address on a veth pair, its own data root,
socket and bridge), sharing this machine's files, as two machines share S3.

Needs root, iproute2 and nsenter (scripts/setup installs them).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

NAMESPACE = "dockyard-test"
HOST_SIDE, INSIDE = "veth-dyh", "veth-dyn"
HOST_ADDRESS, ENGINE_ADDRESS = "10.77.0.1", "10.77.0.2"
BRIDGE = "10.78.0.1/24"  # the second engine's docker0, apart from the first's


def _ip(*args: str, namespace: bool = False) -> None:
    prefix = ["ip", "netns", "exec", NAMESPACE] if namespace else []
    subprocess.run([*prefix, "ip", *args], check=True, capture_output=True, text=True)


def _remove_namespace() -> None:
    with contextlib.suppress(subprocess.CalledProcessError):
        _ip("netns", "del", NAMESPACE)
    with contextlib.suppress(subprocess.CalledProcessError):
        _ip("link", "del", HOST_SIDE)


class Engine:
    """The second engine: its DOCKER_HOST URL, and a way to take it down as a dying machine would."""

    def __init__(self, root: Path, dockerd: subprocess.Popen[bytes]) -> None:
        self.root, self.dockerd = root, dockerd
        self.url = f"unix://{root / 'docker.sock'}"
        self.env = {"DOCKER_HOST": self.url, "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}

    def docker(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]

    def stop(self) -> None:
        """Kill its containers and stop the engine."""
        found = self.docker("ps", "-aq").stdout.split()
        if found:  # else dockerd takes its time to stop
            self.docker("rm", "-f", *found)
        if self.dockerd.poll() is None:
            self.dockerd.send_signal(signal.SIGTERM)
            try:
                self.dockerd.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.dockerd.kill()
                self.dockerd.wait()


@contextlib.contextmanager
def second_engine(images: list[str]) -> Iterator[Engine]:
    """Start the engine with `images` loaded from the first."""
    _remove_namespace()  # a run that died before its teardown
    root = Path(tempfile.mkdtemp(prefix="dockyard-engine2-"))
    _ip("netns", "add", NAMESPACE)
    _ip("link", "add", HOST_SIDE, "type", "veth", "peer", "name", INSIDE)
    _ip("link", "set", INSIDE, "netns", NAMESPACE)
    _ip("addr", "add", f"{HOST_ADDRESS}/24", "dev", HOST_SIDE)
    _ip("link", "set", HOST_SIDE, "up")
    _ip("addr", "add", f"{ENGINE_ADDRESS}/24", "dev", INSIDE, namespace=True)
    _ip("link", "set", INSIDE, "up", namespace=True)
    _ip("link", "set", "lo", "up", namespace=True)
    _ip("route", "add", "default", "via", HOST_ADDRESS, namespace=True)
    url = f"unix://{root / 'docker.sock'}"
    # `ip netns exec` remounts /sys, and dockerd then finds no devices cgroup: enter the network alone.
    with open(root / "dockerd.log", "wb") as log:
        dockerd = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{NAMESPACE}", "dockerd", "--data-root", str(root / "data"),
             "--exec-root", str(root / "exec"), "--pidfile", str(root / "docker.pid"), "-H", url, "--bip", BRIDGE],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    engine = Engine(root, dockerd)
    try:
        deadline = time.time() + 60
        while engine.docker("info").returncode != 0:
            assert dockerd.poll() is None and time.time() < deadline, (root / "dockerd.log").read_text()[-3000:]
            time.sleep(0.5)
        for image in images:
            save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
            subprocess.run(["docker", "load", "-q"], env=engine.env, stdin=save.stdout, check=True, capture_output=True)
            assert save.wait() == 0, f"docker save {image} failed"
        yield engine
    finally:
        engine.stop()
        subprocess.run(["umount", str(root / "exec" / "netns" / "default")], capture_output=True)
        _remove_namespace()
        shutil.rmtree(root, ignore_errors=True)
