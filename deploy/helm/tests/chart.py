"""Runs helm on the chart for the tests: renders, and parses what it renders."""

from __future__ import annotations

import functools
import os
import pathlib
import subprocess
from typing import Any

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]
CHART = ROOT / "deploy" / "helm" / "agentmesh"
CI = CHART / "ci"
BAD = pathlib.Path(__file__).parent / "bad-values"
HELM = os.environ.get("HELM") or str(ROOT / ".tools" / "bin" / "helm")
RELEASE = "mesh"
NAMESPACE = "agents"
FULLNAME = "mesh-agentmesh"
MONITORING = ("monitoring.coreos.com/v1",)
CI_FILES = sorted(p.name for p in CI.glob("*.yaml"))


def helm(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    # Keep helm away from the user's own configuration and caches.
    home = ROOT / ".tools" / "helm-home"
    env.update(HELM_CACHE_HOME=str(home / "cache"), HELM_CONFIG_HOME=str(home / "config"),
               HELM_DATA_HOME=str(home / "data"), KUBECONFIG=os.devnull)
    return subprocess.run([HELM, *args], capture_output=True, text=True, env=env, timeout=120)


def template_args(values: tuple[str, ...] = (), sets: tuple[str, ...] = (),
                  api_versions: tuple[str, ...] = (), kube_version: str | None = None) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for v in values:
        p = pathlib.Path(v)
        args += ["-f", str(p if p.is_absolute() else CI / v)]
    for s in sets:
        args += ["--set", s]
    for a in api_versions:
        args += ["--api-versions", a]
    if kube_version:
        args += ["--kube-version", kube_version]
    return args


@functools.lru_cache(maxsize=None)
def render(values: tuple[str, ...] = (), sets: tuple[str, ...] = (),
           api_versions: tuple[str, ...] = (), kube_version: str | None = None) -> tuple[dict[str, Any], ...]:
    """The manifests helm template renders; fails the test with helm's message if it fails."""
    done = helm(*template_args(values, sets, api_versions, kube_version))
    if done.returncode != 0:
        raise AssertionError(f"helm template {values} {sets} failed:\n{done.stderr}")
    return tuple(d for d in yaml.safe_load_all(done.stdout) if d)


def of_kind(docs, kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def named(docs, kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def worker(role: str) -> str:
    return f"{FULLNAME}-worker-{role.replace('_', '-')}"


def workers(docs) -> dict[str, dict[str, Any]]:
    """Worker Deployments by role label."""
    return {d["metadata"]["labels"]["agentmesh.io/role"]: d for d in of_kind(docs, "Deployment")
            if d["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"}


def pod_specs(docs):
    """(object, pod spec) of every workload."""
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield d, d["spec"]["template"]["spec"]
        elif d["kind"] == "Pod":
            yield d, d["spec"]


def args_of(deployment) -> list[str]:
    return deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def flag(args: list[str], name: str) -> str | None:
    """The value of --name=value in args (None when absent)."""
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    assert len(values) <= 1, f"--{name} given {len(values)} times"
    return values[0] if values else None
