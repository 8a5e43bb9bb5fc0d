"""Regenerate cert-manager-v1.17.1.schema.json, the JSON Schemas that
tests/deploy/test_kubernetes_manifests.py checks rota's cert-manager resources
against.

Where they come from: cert-manager publishes its CRDs (with their OpenAPI v3
schemas) on GitHub, which this project's machines cannot reach. PyPI's
``cloudcoil-models-cert-manager`` 1.17.1.0 carries Pydantic models generated
from cert-manager's CRDs (field names, types, required fields and enums, the
CRDs' descriptions); its version number follows the cert-manager release the
models were generated from, here v1.17.1 (the newest release of the package
that installs on Python 3.11 from the registry this project reaches). This script turns those models into JSON
Schema and makes it as strict as the API server is with ``kubectl apply``
(field validation "Strict"): no ``null`` where the CRD has none, and no field
the CRD does not know. Run it by hand, in a throwaway environment:

    python -m venv /tmp/cm && /tmp/cm/bin/pip install cloudcoil-models-cert-manager==1.17.1.0
    /tmp/cm/bin/python tests/deploy/crds/generate.py

and commit the JSON file it writes (CI only reads it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VERSION = "1.17.1"
OUT = Path(__file__).with_name(f"cert-manager-v{VERSION}.schema.json")


def strict(node: Any) -> Any:
    if isinstance(node, list):
        return [strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    any_of = node.get("anyOf")
    if any_of and any(a == {"type": "null"} for a in any_of):
        rest = [a for a in any_of if a != {"type": "null"}]
        node.pop("anyOf")
        node.pop("default", None)
        if len(rest) == 1:
            node.update(rest[0])
        else:
            node["anyOf"] = rest
    node.pop("title", None)
    node = {k: strict(v) for k, v in node.items()}
    if node.get("properties") is not None and "additionalProperties" not in node:
        node["additionalProperties"] = False
    return node


def main() -> None:
    from cloudcoil.models.cert_manager import v1

    kinds = {}
    for model in (v1.Certificate, v1.Issuer, v1.ClusterIssuer):
        schema = strict(model.model_json_schema())
        schema["properties"]["status"] = {"type": "object"}  # written by cert-manager, not us
        schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "spec"})
        kinds[model.__name__] = schema
    document = {
        "source": f"PyPI cloudcoil-models-cert-manager 1.17.1.0, generated from the CRDs of cert-manager v{VERSION}; made strict by tests/deploy/crds/generate.py",
        "cert_manager_version": VERSION,
        "kinds": kinds,
    }
    OUT.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
