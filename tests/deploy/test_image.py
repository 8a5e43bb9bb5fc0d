"""deploy/Dockerfile and the wheel it installs, checked without a container
engine: what the image is built from and runs as agrees with the manifests,
and the wheel carries every data file rota reads at run time."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
BASE = ROOT / "deploy" / "kubernetes" / "base"


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def _final_stage() -> list[tuple[str, str]]:
    steps = _instructions()
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last_from:]


def _pod_security_contexts() -> list[dict]:
    out = []
    for path in BASE.glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") in ("Deployment", "Job"):
                out.append(doc["spec"]["template"]["spec"]["securityContext"])
    return out


def test_image_is_python_311_slim_and_runs_rota_as_the_manifests_user():
    froms = [rest.split()[0] for op, rest in _instructions() if op == "FROM"]
    assert froms and all(f == "python:3.11-slim" for f in froms)
    final = _final_stage()
    (user,) = [rest for op, rest in final if op == "USER"]
    uid, gid = (int(x) for x in user.split(":"))
    assert uid != 0
    contexts = _pod_security_contexts()
    assert contexts and all(
        c["runAsUser"] == uid and c["runAsGroup"] == gid and c["runAsNonRoot"] for c in contexts
    )
    assert ("ENTRYPOINT", '["rota"]') in final


def test_image_paths_match_the_manifests():
    env = " ".join(rest for op, rest in _final_stage() if op == "ENV")
    config = yaml.safe_load((BASE / "configmap.yaml").read_text())["data"]
    assert f"ROTA_TLS_DIR={config['ROTA_TLS_DIR']}" in env
    assert f"ROTA_DATA_DIR={config['ROTA_DATA_DIR']}" in env


def test_assets_are_built_into_the_image():
    runs = " ".join(rest for op, rest in _instructions() if op == "RUN")
    assert "rota assets" in runs  # at build time; the pods have no npm


def test_the_wheel_carries_every_data_file_rota_reads():
    """A file that package-data misses is in a checkout but not in the image
    (rota assets once failed in a wheel install: package.json was missing)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["rota"]
    package = ROOT / "src" / "rota"
    missing = []
    for path in package.rglob("*"):
        if not path.is_file() or path.suffix in (".py", ".pyc", ".pyi"):
            continue
        rel = path.relative_to(package).as_posix()
        if "/vendor/" in f"/{rel}" or "__pycache__" in rel:
            continue  # installed by `rota assets`, not shipped
        if not any(fnmatch.fnmatch(rel, g.replace("**/", "*")) for g in globs):
            missing.append(rel)
    assert missing == []
