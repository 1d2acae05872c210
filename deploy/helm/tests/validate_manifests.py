"""Validates rendered manifests, offline, against JSON schemas.

* Kubernetes kinds: the strict schemas (unknown fields refused) that the
  kubernetes-validate package ships, of exactly the version asked for. There is no
  fallback to an older version's schemas, and no kind is skipped.
* CRD kinds (KEDA ScaledObject, Prometheus Operator ServiceMonitor, PodMonitor and
  PrometheusRule): the
  Kubernetes schemas do not have them, so they are checked against schemas/*.json in this
  directory. Those are NOT the CRDs: each one describes the fields this chart renders,
  with the CRD's types and constraints, and refuses any other field. A ScaledObject's
  HPA behavior is checked against autoscaling/v2 HorizontalPodAutoscalerBehavior.
* Any other kind is an error.

    python validate_manifests.py --kube-version 1.27.0 rendered.yaml [...]

Exits 1 when any document fails, printing each failure with its file, kind, name and
the path of the offending field.
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import re
import sys
from typing import Any, Iterable

import jsonschema
import kubernetes_validate
import yaml
from referencing import Registry, Resource

SCHEMAS = pathlib.Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
HERE = pathlib.Path(__file__).parent
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): HERE / "schemas" / "scaledobject-keda.sh-v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): HERE / "schemas" / "servicemonitor-monitoring.coreos.com-v1.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): HERE / "schemas" / "podmonitor-monitoring.coreos.com-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): HERE / "schemas" / "prometheusrule-monitoring.coreos.com-v1.json",
    ("cert-manager.io/v1", "Certificate"): HERE / "schemas" / "certificate-cert-manager.io-v1.json",
}


def available_versions() -> list[str]:
    """The Kubernetes versions whose strict schemas the installed package ships."""
    found = []
    for d in SCHEMAS.iterdir():
        m = re.fullmatch(r"v(\d+\.\d+\.\d+)-local-strict", d.name)
        if m:
            found.append(m.group(1))
    return sorted(found, key=lambda v: tuple(int(p) for p in v.split(".")))


@functools.lru_cache(maxsize=None)
def _definitions(version: str) -> Resource:
    directory = SCHEMAS / f"v{version}-local-strict"
    if not directory.is_dir():
        raise SystemExit(
            f"kubernetes-validate {kubernetes_validate.__version__} has no strict schemas of "
            f"Kubernetes {version} (it has {', '.join(available_versions())})"
        )
    return Resource.from_contents(json.loads((directory / "_definitions.json").read_text()))


@functools.lru_cache(maxsize=None)
def _k8s_validator(version: str, file_name: str) -> jsonschema.protocols.Validator | None:
    path = SCHEMAS / f"v{version}-local-strict" / file_name
    if not path.is_file():
        return None
    schema = json.loads(path.read_text())
    registry = Resource.from_contents(schema) @ Registry()
    registry = _definitions(version) @ registry
    return jsonschema.Draft202012Validator(schema, registry=registry)


def k8s_validator(version: str, api_version: str, kind: str):
    # rbac.authorization.k8s.io/v1 -> rbac-v1, apps/v1 -> apps-v1, v1 -> v1
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    _definitions(version)  # a clear exit when the version is not shipped
    return _k8s_validator(version, f"{kind.lower()}-{group}.json")


@functools.lru_cache(maxsize=None)
def crd_validator(api_version: str, kind: str):
    path = CRD_SCHEMAS.get((api_version, kind))
    if path is None:
        return None
    schema = json.loads(path.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _errors(validator, doc) -> list[str]:
    out = []
    for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        where = ".".join(str(p) for p in e.absolute_path) or "(top)"
        out.append(f"{where}: {e.message}")
    return out


def validate_document(doc: dict[str, Any], version: str) -> list[str]:
    """Every failure of one manifest, as 'field.path: message' strings (empty: valid)."""
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return ["(top): a manifest needs apiVersion and kind"]
    validator = crd_validator(api_version, kind)
    if validator is not None:
        problems = _errors(validator, doc)
        behavior = (
            doc.get("spec", {}).get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
        )
        if behavior is not None:
            hpa = _k8s_validator(version, "horizontalpodautoscalerbehavior-autoscaling-v2.json")
            problems += [
                "spec.advanced.horizontalPodAutoscalerConfig.behavior." + p for p in _errors(hpa, behavior)
            ]
        return problems
    validator = k8s_validator(version, api_version, kind)
    if validator is None:
        return [f"(top): no schema for {api_version} {kind}, neither in Kubernetes {version} nor in {HERE / 'schemas'}"]
    return _errors(validator, doc)


def documents(path: pathlib.Path) -> Iterable[dict[str, Any]]:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            yield doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kube-version", required=True, help="e.g. 1.27.0")
    parser.add_argument("files", nargs="+", type=pathlib.Path)
    args = parser.parse_args(argv)
    failures = checked = 0
    kinds: dict[str, int] = {}
    for path in args.files:
        for doc in documents(path):
            checked += 1
            kinds[doc.get("kind", "?")] = kinds.get(doc.get("kind", "?"), 0) + 1
            name = (doc.get("metadata") or {}).get("name", "?")
            for problem in validate_document(doc, args.kube_version):
                failures += 1
                print(f"FAIL {path.name}: {doc.get('kind')}/{name} (Kubernetes {args.kube_version}): {problem}")
    summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    print(
        f"  Kubernetes {args.kube_version}: {checked} manifests in {len(args.files)} files, "
        f"{failures} failures ({summary})"
    )
    return 1 if failures or not checked else 0


if __name__ == "__main__":
    sys.exit(main())
