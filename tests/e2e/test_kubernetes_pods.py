"""The pods of deploy/kubernetes/, run as processes on this machine.

No cluster here, so this plays the kubelet: it renders the example overlay,
and for each pod builds the environment Kubernetes would give the container
(the ConfigMap, the env list with its ``$(VAR)`` references, field references,
Secret keys, and the volumes mounted at their paths, here directories), then
runs the container's own args and probe commands. What differs, and why:
ports are free ones and every listener is on 127.0.0.1 (this machine is
shared), the Secrets' values are this test's, NATS is one server, so
``ROTA_NATS_REPLICAS`` is 1 instead of the ConfigMap's 3, the database is
SQLite, and ``ROTA_SHUTDOWN_GRACE_SECONDS`` is 3 instead of 30. What it shows: the migration Job migrates, the web server's readiness
probe passes, the lead and execute workers start with those variables, elect a
leader, register under their pod names at their advertised endpoints, pass
their exec probes before and after a certificate renewal swapped in like the
kubelet does, run a job submitted through the API, and stop on SIGTERM well
within terminationGracePeriodSeconds.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from rota.bus import subjects
from rota.bus.server import EmbeddedNats, NatsServerError, free_port
from rota.control.certs import init_certs
from tests.conftest import CI
from tests.deploy.test_kubernetes_manifests import DEPLOY, rendered
from tests.e2e.conftest import clean_env
from tests.secret_volume import SecretVolume

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

TOKEN = "k8s-pods-test-token"
CONTROL_PORT = "50051"


class Pod:
    """One pod's container, started as a process with the kubelet's view of it."""

    def __init__(self, name: str, container: dict[str, Any], env: dict[str, str], log: Path):
        self.name, self.container, self.env, self.log = name, container, env, log
        self.proc: subprocess.Popen | None = None

    def start(self, args: list[str]) -> Pod:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rota", *args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.log.parent,
            )
        return self

    def exec(self, command: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
        """``kubectl exec`` (and the kubelet's exec probes): a command in the pod's environment."""
        assert command[0] == "rota", command
        return subprocess.run(
            [sys.executable, "-m", "rota", *command[1:]],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def probe(self, kind: str) -> subprocess.CompletedProcess:
        return self.exec(self.container[kind]["exec"]["command"])

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Kubelet:
    def __init__(self, tmp: Path, secrets: dict[str, dict[str, str]], tls: SecretVolume):
        self.tmp, self.secrets, self.tls = tmp, secrets, tls
        self.docs = rendered(DEPLOY / "overlays" / "example")
        self.config_maps = {
            d["metadata"]["name"]: d["data"] for d in self.docs if d["kind"] == "ConfigMap"
        }
        self.pods: list[Pod] = []

    def template(self, kind: str, name: str) -> dict[str, Any]:
        doc = next(d for d in self.docs if d["kind"] == kind and d["metadata"]["name"] == name)
        return doc["spec"]["template"]["spec"]

    def _volume_dir(self, pod: str, volume: dict[str, Any]) -> Path:
        secret = volume.get("secret")
        if secret and secret["secretName"] == "rota-tls":
            return self.tls.root  # one Secret, mounted by every pod
        directory = self.tmp / pod / volume["name"]
        directory.mkdir(parents=True, exist_ok=True)
        if secret:
            data = self.secrets[secret["secretName"]]
            for item in secret.get("items") or [{"key": k, "path": k} for k in data]:
                (directory / item["path"]).write_text(data[item["key"]])
        return directory

    def pod(self, kind: str, name: str, pod_name: str, port_map: dict[str, str]) -> Pod:
        spec = self.template(kind, name)
        (container,) = spec["containers"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        mounts = {
            m["mountPath"]: self._volume_dir(pod_name, volumes[m["name"]])
            for m in container.get("volumeMounts", [])
        }

        def local(value: str) -> str:
            for mount_path in sorted(mounts, key=len, reverse=True):
                if value == mount_path or value.startswith(mount_path + "/"):
                    value = str(mounts[mount_path]) + value[len(mount_path) :]
                    break
            for port, free in port_map.items():
                value = re.sub(rf"\b{port}\b", free, value)
            return value.replace("0.0.0.0", "127.0.0.1")

        env = clean_env()
        for ref in container.get("envFrom", []):
            for key, value in self.config_maps[ref["configMapRef"]["name"]].items():
                env[key] = local(value)
        fields = {"metadata.name": pod_name, "status.podIP": "127.0.0.1"}
        for e in container.get("env", []):
            if "value" in e:
                value = re.sub(
                    r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), e["value"]
                )
                env[e["name"]] = local(value)
            elif "fieldRef" in e["valueFrom"]:
                env[e["name"]] = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
            else:
                ref = e["valueFrom"]["secretKeyRef"]
                env[e["name"]] = self.secrets[ref["name"]][ref["key"]]
        env["ROTA_NATS_REPLICAS"] = "1"  # one nats-server here, three in the cluster
        env["ROTA_SHUTDOWN_GRACE_SECONDS"] = "3"
        pod = Pod(pod_name, container, env, self.tmp / f"{pod_name}.log")
        pod.container = {**container, "args": [local(a) for a in container.get("args", [])]}
        self.pods.append(pod)
        return pod


async def _registry(url: str) -> tuple[dict[str, dict], dict | None]:
    import nats

    nc = await nats.connect(url, token=TOKEN)
    try:
        js = nc.jetstream()
        workers = await js.key_value(subjects.WORKERS_BUCKET)
        entries = {}
        for key in await workers.keys():
            entry = await workers.get(key)
            if entry.value:
                entries[key] = orjson.loads(entry.value)
        leases = await js.key_value(subjects.LEASES_BUCKET)
        try:
            leader = orjson.loads((await leases.get(subjects.LEADER_KEY)).value)
        except Exception:
            leader = None
        return entries, leader
    finally:
        await nc.close()


def _wait(check, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"{what} not within {timeout}s (last: {last!r})")


@pytest.fixture
def nats_for_pods(tmp_path):
    try:
        server = EmbeddedNats(tmp_path / "nats", token=TOKEN, log_file=tmp_path / "nats.log")
        server.start()
    except NatsServerError as exc:
        if CI:
            raise
        pytest.skip(f"nats-server unavailable: {exc}")
    yield server
    server.stop()


def test_the_example_pods_run_probe_and_serve(tmp_path, nats_for_pods):
    init_certs(tmp_path / "issued", ["rota"])
    tls = SecretVolume(tmp_path / "rota-tls")
    tls.write_dir(tmp_path / "issued")
    secrets = {
        "rota-secrets": {
            "database-url": f"sqlite:///{tmp_path / 'rota.sqlite3'}",
            "secret-key": "k8s-pods-test-secret",
        },
        "rota-nats": {"url": nats_for_pods.url, "token": TOKEN},
    }
    kubelet = Kubelet(tmp_path, secrets, tls)
    http_port = str(free_port())
    began = time.monotonic()

    def phase(name: str) -> None:
        print(f"\n{time.monotonic() - began:6.1f} s  {name}")

    try:
        migrate = kubelet.pod("Job", "rota-migrate", "rota-migrate-x1", {})
        migrate.start(migrate.container["args"])
        assert migrate.proc.wait(timeout=240) == 0, migrate.log.read_text()

        phase("migrated")
        server = kubelet.pod("Deployment", "rota-server", "rota-server-a", {"8000": http_port})
        server.start(server.container["args"])
        leads = [
            kubelet.pod("Deployment", "rota-lead", name, {CONTROL_PORT: str(free_port())})
            for name in ("rota-lead-a", "rota-lead-b")
        ]
        executes = [
            kubelet.pod("Deployment", "rota-execute", name, {CONTROL_PORT: str(free_port())})
            for name in ("rota-execute-a", "rota-execute-b")
        ]
        workers = [*leads, *executes]
        for pod in workers:
            pod.start(pod.container["args"])

        # The kubelet's probes, as the manifests write them.
        health = server.container["readinessProbe"]["httpGet"]["path"]

        def ready() -> bool:
            try:
                return (
                    httpx.get(f"http://127.0.0.1:{http_port}{health}", timeout=5).status_code == 200
                )
            except httpx.HTTPError:
                return False

        _wait(ready, 120, "the web server's readiness probe")
        phase("web server ready")
        for pod in workers:
            _wait(
                lambda pod=pod: pod.probe("startupProbe").returncode == 0,
                120,
                f"{pod.name} startup",
            )
        phase("workers started (startup probes passed)")
        # Readiness and liveness run the same command as startup; run each once.
        assert workers[0].probe("readinessProbe").returncode == 0
        assert workers[-1].probe("livenessProbe").returncode == 0

        phase("probes")

        # Registered under their pod names, at the endpoints they advertise; one leads.
        def registered():
            entries, leader = asyncio.run(_registry(nats_for_pods.url))
            live = {
                e["node_id"]: e for e in entries.values() if e.get("state") != "STOPPED_GRACEFUL"
            }
            return (live, leader) if len(live) == 4 and leader else None

        live, leader = _wait(registered, 60, "four workers and a leader")
        assert set(live) == {p.name for p in workers}
        for pod in workers:
            assert live[pod.name]["grpc_endpoint"] == pod.env["ROTA_GRPC_ADVERTISE"]
        assert leader["node_id"] in {"rota-lead-a", "rota-lead-b"}

        phase("registered, leader elected")
        # An admin and a token, with the command of docs/operations.md#kubernetes
        # (step 6) run in the web server's pod, then a job through the API.
        issued = server.exec(
            ["rota", "tokens", "create", "admin", "--create-admin", "--name", "ops"]
        )
        assert issued.returncode == 0, issued.stderr
        cli = {
            **clean_env(),
            "ROTA_API_URL": f"http://127.0.0.1:{http_port}",
            "ROTA_API_TOKEN": issued.stdout.strip().splitlines()[-1],
        }
        rota = [sys.executable, "-m", "rota"]
        subprocess.run(
            [*rota, "jobs", "create", "hello", "--kind", "command", "--target", "true"],
            env=cli,
            check=True,
            capture_output=True,
            timeout=60,
        )
        submitted = subprocess.run(
            [*rota, "submit", "hello", "--wait"],
            env=cli,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr

        phase("job submitted and run")
        # cert-manager renews rota-tls; the kubelet swaps it in; nobody restarts.
        init_certs(tmp_path / "issued", ["rota"])  # same CA, new node key and certificate
        tls.write_dir(tmp_path / "issued")
        for pod in workers:
            result = pod.probe("livenessProbe")
            assert result.returncode == 0, result.stderr
        assert all(p.proc.poll() is None for p in [server, *workers])

        phase("probes after renewal")
        # Scaling down: SIGTERM, and the worker is gone well within its grace period.
        grace = kubelet.template("Deployment", "rota-execute")["terminationGracePeriodSeconds"]
        victim = executes[0]
        t0 = time.monotonic()
        victim.proc.send_signal(signal.SIGTERM)
        assert victim.proc.wait(timeout=grace) == 0
        print(
            f"\nexecute worker stopped {time.monotonic() - t0:.1f} s after SIGTERM (grace {grace} s)"
        )
        assert victim.probe("livenessProbe").returncode == 2
    except BaseException:
        for pod in kubelet.pods:
            print(f"\n--- {pod.name} (last lines) ---\n" + pod.log.read_text()[-3000:])
        raise
    finally:
        for pod in kubelet.pods:
            pod.kill()
