"""A second Docker engine on this machine, as a second host of a fleet: dockerd in a
network namespace of its own (its own address on a veth pair, its own data root,
socket and bridge), sharing this machine's files, as two machines share S3.

Needs root, iproute2 and nsenter (scripts/setup installs them).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


class _Names:
    """One engine's namespace, veth ends and addresses: its own, so that two at once (tests on two
    pytest workers) never meet."""

    def __init__(self) -> None:
        n = random.randrange(1, 250)
        tag = f"{os.getpid() % 10000:04d}{n:03d}"
        self.namespace = f"dockyard-test-{tag}"
        self.host_side, self.inside = f"vdh{tag}", f"vdn{tag}"  # at most 15 characters
        self.host_address, self.engine_address = f"10.77.{n}.1", f"10.77.{n}.2"
        self.bridge = f"10.78.{n}.1/24"  # the engine's docker0, apart from the first's

    def ip(self, *args: str, inside: bool = False) -> None:
        prefix = ["ip", "netns", "exec", self.namespace] if inside else []
        subprocess.run([*prefix, "ip", *args], check=True, capture_output=True, text=True)

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.ip("netns", "del", self.namespace)
        with contextlib.suppress(subprocess.CalledProcessError):
            self.ip("link", "del", self.host_side)


class Engine:
    """The second engine: its DOCKER_HOST URL, its machine's address, and a way to take it down
    as a dying machine would."""

    def __init__(self, root: Path, dockerd: subprocess.Popen[bytes], address: str) -> None:
        self.root, self.dockerd, self.address = root, dockerd, address
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
    names = _Names()
    root = Path(tempfile.mkdtemp(prefix="dockyard-engine2-"))
    names.ip("netns", "add", names.namespace)
    names.ip("link", "add", names.host_side, "type", "veth", "peer", "name", names.inside)
    names.ip("link", "set", names.inside, "netns", names.namespace)
    names.ip("addr", "add", f"{names.host_address}/24", "dev", names.host_side)
    names.ip("link", "set", names.host_side, "up")
    names.ip("addr", "add", f"{names.engine_address}/24", "dev", names.inside, inside=True)
    names.ip("link", "set", names.inside, "up", inside=True)
    names.ip("link", "set", "lo", "up", inside=True)
    names.ip("route", "add", "default", "via", names.host_address, inside=True)
    url = f"unix://{root / 'docker.sock'}"
    # `ip netns exec` remounts /sys, and dockerd then finds no devices cgroup: enter the network alone.
    with open(root / "dockerd.log", "wb") as log:
        dockerd = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{names.namespace}", "dockerd", "--data-root", str(root / "data"),
             "--exec-root", str(root / "exec"), "--pidfile", str(root / "docker.pid"), "-H", url,
             "--bip", names.bridge],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    engine = Engine(root, dockerd, names.engine_address)
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
        names.remove()
        shutil.rmtree(root, ignore_errors=True)
