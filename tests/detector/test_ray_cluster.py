"""`--backend ray --ray-address HOST:PORT` against a real two-node cluster on this machine.

One cluster for the module, as a user starts it: ``ray start --head`` and
``ray start --address`` (one CPU each, loopback addresses, no dashboard UI),
with Ray's token authentication on and a private HOME (no one's
~/.ray/auth_token is read or written). The commands run as a user runs them,
in sessions of their own (tests/helpers.py: run_sppnet_session). Marked
``ray_cluster`` (``pytest -m ray_cluster``); every wait is bounded and the
cluster's processes are killed by their session at the end, whatever happened.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import end_session, run_sppnet_session, session_processes, sppnet_env

pytest.importorskip("ray", reason="the Ray extra is not installed (make test installs it)")
pytestmark = [pytest.mark.ray_cluster,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="lists processes through /proc")]

RAY = Path(sys.executable).with_name("ray")  # the CLI of the Ray this Python imports
# Seconds a node may take to start on 2 busy cores (measured: 5-20).
NODE_START_S = 120
# Ray's own knob for how long a client retries the head (default ~20 tries): a refused
# client then fails in seconds, not half a minute.
QUICK_REFUSAL = {"RAY_gcs_server_port_wait_time_s": "2"}


@dataclass(frozen=True)
class Cluster:
    address: str  # 127.0.0.1:PORT of the head
    env: dict  # a client's environment: this checkout, the private HOME, the cluster's token
    sessions: tuple  # the session ids of the two `ray start --block` processes

    def forkservers(self) -> dict:
        """The cluster's processes started by multiprocessing's forkserver (none between jobs)."""
        return {pid: cmd for sid in self.sessions for pid, cmd in session_processes(sid).items()
                if "multiprocessing.forkserver" in cmd}


PORT_OPTIONS = ("--dashboard-port", "--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
                "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port")


def _free_ports(count: int) -> list:
    """``count`` distinct free ports. The sockets stay bound until all are chosen: one bound and
    closed at a time, the kernel may hand the same port out twice (CI once gave Ray's
    dashboard_agent_grpc and metrics_export one port, and the head refused to start)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _node_args(ports: list) -> list:
    """One CPU, loopback, and explicit ports: two nodes on one machine must not collide."""
    args = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--object-store-memory", str(200 << 20),
            "--disable-usage-stats", "--block"]
    for option, port in zip(PORT_OPTIONS, ports, strict=True):
        args += [option, str(port)]
    return args


def _wait_started(node: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + NODE_START_S
    while "Ray runtime started" not in log.read_text():
        if node.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"ray start did not start a node:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray_cluster")
    # Ray's socket paths must fit in 107 bytes: a short folder of its own under /tmp.
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    token = secrets.token_hex(32)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    node_env = {**clean, "HOME": str(root), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
                "RAY_USAGE_STATS_ENABLED": "0"}
    # Every port of both nodes chosen at once, so none is chosen twice.
    port, *node_ports = _free_ports(1 + 2 * len(PORT_OPTIONS))
    address = f"127.0.0.1:{port}"
    nodes = []
    try:
        for i, (name, first) in enumerate((("head", ["--head", "--port", str(port), "--include-dashboard=false"]),
                                           ("worker", ["--address", address]))):
            ports = node_ports[i * len(PORT_OPTIONS):(i + 1) * len(PORT_OPTIONS)]
            log = root / f"{name}.log"
            with log.open("w") as out:
                nodes.append(subprocess.Popen([RAY, "start", *first, "--temp-dir", temp_dir, *_node_args(ports)],
                                              env=node_env, stdout=out, stderr=subprocess.STDOUT,
                                              start_new_session=True))
            _wait_started(nodes[-1], log)
        client = {k: v for k, v in sppnet_env().items() if not k.startswith("RAY_")}
        client.update(HOME=str(root), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
        yield Cluster(address, client, tuple(n.pid for n in nodes))
    finally:
        for node in reversed(nodes):
            node.terminate()  # `ray start --block` stops its node's processes on SIGTERM
        for node in nodes:
            try:
                node.wait(15)
            except subprocess.TimeoutExpired:
                pass
            end_session(node.pid, grace=5)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _without_timing(report: Path) -> dict:
    d = json.loads(report.read_text())
    d.pop("timing")
    return d


def _no_forkservers_left(cluster: Cluster, grace: float = 30) -> dict:
    """What forkserver processes of the cluster outlive the job by ``grace`` seconds."""
    deadline = time.monotonic() + grace
    while (left := cluster.forkservers()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def _few_test_images(voc_data: Path, tmp_path: Path, n: int = 6) -> Path:
    """A copy of the session's set whose split "few" is its first ``n`` test images
    (enough for two nodes to share; every image costs seconds on 2 busy cores)."""
    data = tmp_path / "data"
    shutil.copytree(voc_data, data)
    ids = (data / "ImageSets" / "Main" / "test.txt").read_text().split()[:n]
    (data / "ImageSets" / "Main" / "few.txt").write_text("\n".join(ids) + "\n")
    return data


def test_propose_on_the_cluster_reports_what_local_reports(cluster, voc_data, tmp_path):
    common = ["propose", "--data", voc_data, "--split", "test", "--limit", "6", "--no-progress"]
    local = run_sppnet_session(*common, "--cache", tmp_path / "local", "--report", tmp_path / "local_report")
    assert local.returncode == 0, local.stderr
    remote = run_sppnet_session(*common, "--cache", tmp_path / "ray", "--report", tmp_path / "ray_report",
                                "--backend", "ray", "--ray-address", cluster.address, "--ray-shard-size", "4",
                                env=cluster.env)
    assert remote.returncode == 0, remote.stderr
    assert f"joined the Ray cluster at {cluster.address}: 2 nodes, 2 CPUs" in remote.stderr
    assert _without_timing(tmp_path / "ray_report" / "proposals_report.json") == \
        _without_timing(tmp_path / "local_report" / "proposals_report.json")
    # Nothing of the command is left on this machine, nor in the cluster after its job.
    assert remote.left == {} and local.left == {}
    assert _no_forkservers_left(cluster) == {}


def test_test_on_the_cluster_scores_what_local_scores(cluster, trained_run, tmp_path):
    data = _few_test_images(trained_run.data, tmp_path)
    common = ["test", "--model", trained_run.model_path, "--data", data, "--split", "few", "--no-progress"]
    local = run_sppnet_session(*common, "--out", tmp_path / "local", "--cache", tmp_path / "local_cache")
    assert local.returncode == 0, local.stderr
    remote = run_sppnet_session(*common, "--out", tmp_path / "ray", "--cache", tmp_path / "ray_cache",
                                "--backend", "ray", "--ray-address", cluster.address, env=cluster.env)
    assert remote.returncode == 0, remote.stderr
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("local", "ray"))
    assert b["mAP"] == pytest.approx(a["mAP"], abs=1e-9) and a["mAP"] > 0
    assert (tmp_path / "ray" / "report.md").read_text() == (tmp_path / "local" / "report.md").read_text()
    assert remote.left == {}


def test_a_bad_image_on_the_cluster_ends_everything(cluster, voc_data, tmp_path):
    data = _few_test_images(voc_data, tmp_path)
    ids = (data / "ImageSets" / "Main" / "few.txt").read_text().split()
    jpg = data / "JPEGImages" / f"{ids[3]}.jpg"  # in the second shard: searches run when it fails
    jpg.write_bytes(jpg.read_bytes()[:200])
    res = run_sppnet_session("propose", "--data", data, "--split", "few", "--cache", tmp_path / "c", "--no-progress",
                             "--backend", "ray", "--ray-address", cluster.address, "--ray-shard-size", "2",
                             env=cluster.env)
    assert res.returncode == 2 and f"error: {jpg}" in res.stderr, res.stderr
    assert res.left == {}
    assert _no_forkservers_left(cluster) == {}


def test_a_client_without_the_clusters_token_gets_rays_reason(cluster, voc_data, tmp_path):
    env = {k: v for k, v in cluster.env.items() if not k.startswith("RAY_AUTH")}
    res = run_sppnet_session("propose", "--data", voc_data, "--split", "test", "--cache", tmp_path, "--backend", "ray",
                             "--ray-address", cluster.address, env={**env, **QUICK_REFUSAL})
    assert res.returncode == 2, res.stderr
    error = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert error == [f"error: the Ray cluster at {cluster.address} refused this client: RPC error: "
                     "InvalidAuthToken: Authentication token is missing or incorrect (the cluster uses token "
                     "authentication, this client does not: set RAY_AUTH_MODE=token, with the cluster's token "
                     "in RAY_AUTH_TOKEN, in a file named by RAY_AUTH_TOKEN_PATH or in ~/.ray/auth_token)"], res.stderr
    assert res.left == {}
