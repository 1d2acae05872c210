"""Tests of the agentmesh Helm chart over what `helm template` renders (no cluster).

Run by `make chart-test` (scripts/chart-test.sh), which installs helm and this venv.
"""

from __future__ import annotations

import json
import pathlib
import re

import pytest
import yaml

import validate_manifests
from chart import (BAD, CHART, CI_FILES, FULLNAME, MONITORING, NAMESPACE, RELEASE, args_of, flag, helm,
                   named, of_kind, pod_specs, render, template_args, worker, workers)

BUILT_IN = ["architect", "backend", "database", "devops", "frontend", "security", "supervisor"]
COORDINATOR = f"{FULLNAME}-coordinator"
ETCD = f"{FULLNAME}-etcd"
CHART_YAML = yaml.safe_load((CHART / "Chart.yaml").read_text())


def every_rendering():
    """Each CI values file, with and without the Prometheus Operator's API."""
    for f in CI_FILES:
        yield f, render((f,))
        yield f + "+monitoring", render((f,), api_versions=MONITORING)


def autoscaler_targets(docs) -> dict[str, str]:
    """Deployment name -> the kind of autoscaler that owns it."""
    out = {}
    for d in of_kind(docs, "ScaledObject") + of_kind(docs, "HorizontalPodAutoscaler"):
        target = d["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["apiVersion"] == "apps/v1"
        assert target["name"] not in out, f"{target['name']} has two autoscalers"
        out[target["name"]] = d["kind"]
    return out


# ------------------------------------------------------------------------------- roles

def test_one_deployment_per_role_with_its_replicas():
    docs = render()
    by_role = workers(docs)
    assert sorted(by_role) == BUILT_IN
    for role, d in by_role.items():
        assert d["metadata"]["name"] == worker(role)
        assert d["spec"]["replicas"] == 1
        assert flag(args_of(d), "role") == role
        assert flag(args_of(d), "capacity") == "4"
        assert flag(args_of(d), "brain") == "scripted"

    docs = render(sets=("roles.backend.replicas=3", "roles.database.replicas=0",
                        "workerDefaults.replicas=2", "roles.qa_lead.capacity=7"))
    by_role = workers(docs)
    assert sorted(by_role) == sorted(BUILT_IN + ["qa_lead"])
    assert by_role["backend"]["spec"]["replicas"] == 3
    assert by_role["database"]["spec"]["replicas"] == 0, "replicas: 0 must survive the defaults merge"
    assert by_role["frontend"]["spec"]["replicas"] == 2
    assert by_role["qa_lead"]["spec"]["replicas"] == 2
    assert flag(args_of(by_role["qa_lead"]), "capacity") == "7"


def test_custom_roles_and_disabled_roles():
    docs = render(("external-etcd-values.yaml",))
    by_role = workers(docs)
    assert "frontend" not in by_role, "enabled: false renders nothing for the role"
    assert not [d for d in docs if d["metadata"]["labels"].get("agentmesh.io/role") == "frontend"]
    # '_' is fine in a role and a label value, spelled '-' in object names.
    ml = by_role["ml_ops"]
    assert ml["metadata"]["name"] == f"{FULLNAME}-worker-ml-ops"
    assert ml["metadata"]["labels"]["agentmesh.io/role"] == "ml_ops"
    assert flag(args_of(ml), "role") == "ml_ops"
    assert flag(args_of(ml), "brain") == "openai"
    assert flag(args_of(ml), "model") == "local"
    assert flag(args_of(ml), "base-url") == "http://llm.models.svc:8080/v1"
    assert flag(args_of(ml), "api-key-env") is None, "no Secret given: no key flag"
    # The exec brain on an image of its own, with a persona from an existing ConfigMap.
    arch = by_role["architect"]
    spec = arch["spec"]["template"]["spec"]
    assert spec["containers"][0]["image"] == "registry.example.com/mirror/example/agentmesh-worker-claude:2026.1"
    assert spec["containers"][0]["imagePullPolicy"] == "Always"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert flag(args_of(arch), "exec") == "claude -p"
    assert flag(args_of(arch), "persona") == "/etc/agentmesh/persona/persona.md"
    volume = next(v for v in spec["volumes"] if v["name"] == "persona")
    assert volume["configMap"] == {"name": "team-personas", "items": [{"key": "architect.md", "path": "persona.md"}]}


def test_every_role_reaches_the_same_etcd_as_the_coordinators():
    for f in CI_FILES:
        docs = render((f,))
        coordinator = named(docs, "Deployment", COORDINATOR)
        endpoints = flag(args_of(coordinator), "etcd")
        assert endpoints
        for role, d in workers(docs).items():
            assert flag(args_of(d), "etcd") == endpoints, (f, role)


def test_inline_persona_is_a_configmap_mounted_and_passed():
    docs = render(("keda-values.yaml",))
    values = yaml.safe_load((CHART / "ci" / "keda-values.yaml").read_text())
    text = values["roles"]["payments"]["persona"]["text"]
    cm = named(docs, "ConfigMap", worker("payments") + "-persona")
    assert cm["data"] == {"persona.md": text}
    d = workers(docs)["payments"]
    spec = d["spec"]["template"]["spec"]
    assert flag(args_of(d), "persona") == "/etc/agentmesh/persona/persona.md"
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "persona")
    assert mount == {"name": "persona", "mountPath": "/etc/agentmesh/persona", "readOnly": True}
    volume = next(v for v in spec["volumes"] if v["name"] == "persona")
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    assert "checksum/persona" in d["spec"]["template"]["metadata"]["annotations"]
    # Built-in personas: no flag, no ConfigMap.
    backend = workers(docs)["backend"]
    assert flag(args_of(backend), "persona") is None
    assert len(of_kind(docs, "ConfigMap")) == 1


def test_grace_period_outlasts_an_in_flight_turn():
    for f in CI_FILES:
        for role, d in workers(render((f,))).items():
            args = args_of(d)
            turn = flag(args, "turn-timeout")
            seconds = {"ms": 0.001, "s": 1, "m": 60}
            m = re.fullmatch(r"([0-9.]+)(ms|s|m)?", turn)
            turn_s = float(m.group(1)) * seconds[m.group(2) or "s"]
            grace = int(flag(args, "grace-secs"))
            kill = d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            assert turn_s < grace < kill, (f, role, turn, grace, kill)
    payments = workers(render(("keda-values.yaml",)))["payments"]
    assert flag(args_of(payments), "turn-timeout") == "3m"
    assert flag(args_of(payments), "grace-secs") == "190"
    assert payments["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 200


# ------------------------------------------------------------------------------ labels

STANDARD = ["app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
            "app.kubernetes.io/managed-by", "app.kubernetes.io/component", "app.kubernetes.io/part-of",
            "helm.sh/chart"]


RENDERINGS = list(every_rendering())


@pytest.mark.parametrize("name,docs", RENDERINGS, ids=[n for n, _ in RENDERINGS])
def test_labels_on_every_object(name, docs):
    expected = {"app.kubernetes.io/name": "agentmesh", "app.kubernetes.io/instance": RELEASE,
                "app.kubernetes.io/version": CHART_YAML["appVersion"], "app.kubernetes.io/managed-by": "Helm",
                "app.kubernetes.io/part-of": "agentmesh",
                "helm.sh/chart": f"agentmesh-{CHART_YAML['version']}"}
    roles = set(workers(docs))
    for d in docs:
        labels = d["metadata"].get("labels", {})
        where = f"{d['kind']}/{d['metadata']['name']}"
        for key in STANDARD:
            assert key in labels, f"{where} lacks {key}"
        for key, value in expected.items():
            assert labels[key] == value, f"{where}: {key}={labels[key]}"
        assert d["metadata"].get("namespace") == NAMESPACE, where
        # Every object of a role says which (policies and the PodMonitor covering all
        # workers have no role).
        per_role = labels["app.kubernetes.io/component"] == "worker" and d["kind"] not in ("NetworkPolicy", "PodMonitor")
        if per_role:
            assert labels.get("agentmesh.io/role") in roles, f"{where} lacks agentmesh.io/role"
            assert labels["agentmesh.io/role"] in d["metadata"]["name"].replace("-", "_") or \
                labels["agentmesh.io/role"].replace("_", "-") in d["metadata"]["name"], where
        if d["kind"] in ("Deployment", "StatefulSet"):
            template = d["spec"]["template"]["metadata"]["labels"]
            for key in STANDARD:
                assert key in template, f"{where} pod template lacks {key}"
            selector = d["spec"]["selector"]["matchLabels"]
            assert selector.items() <= template.items(), f"{where}: selector does not match its pods"
            if per_role:
                assert selector["agentmesh.io/role"] == labels["agentmesh.io/role"], \
                    f"{where}: a role's selector must not match another role's pods"


def test_common_labels_reach_every_object():
    docs = render(sets=("commonLabels.team=platform",))
    assert all(d["metadata"]["labels"].get("team") == "platform" for d in docs)


# ------------------------------------------------------------------------- autoscaling

def test_scaledobject_query_threshold_and_bounds():
    """The e2e test on the coordinator side reads this exact ScaledObject."""
    docs = render(("keda-values.yaml",))
    so = named(docs, "ScaledObject", worker("backend"))
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    assert so["spec"]["scaleTargetRef"]["name"] == worker("backend")
    assert so["spec"]["minReplicaCount"] == 0
    assert so["spec"]["maxReplicaCount"] == 8
    assert so["spec"]["pollingInterval"] == 10
    assert so["spec"]["cooldownPeriod"] == 120
    [trigger] = so["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metricType"] == "AverageValue"
    assert trigger["metadata"] == {
        "serverAddress": "http://prometheus.monitoring.svc:9090",
        "query": 'sum(agentmesh_role_sessions{job="agentmesh-coordinator",role="backend"}) or vector(0)',
        "threshold": "2",
        "activationThreshold": "0",
    }
    # threshold is each role's capacity; every role's query names the role.
    for role, d in workers(docs).items():
        so = named(docs, "ScaledObject", worker(role))
        [trigger] = so["spec"]["triggers"]
        assert trigger["metadata"]["threshold"] == flag(args_of(d), "capacity"), role
        assert trigger["metadata"]["query"] == \
            f'sum(agentmesh_role_sessions{{job="agentmesh-coordinator",role="{role}"}}) or vector(0)'
    # Per-role override of the global minimum.
    assert named(docs, "ScaledObject", worker("supervisor"))["spec"]["minReplicaCount"] == 1
    assert named(docs, "ScaledObject", worker("payments"))["spec"]["triggers"][0]["metadata"]["threshold"] == "3"


def test_default_selector_picks_this_releases_coordinators():
    docs = render(sets=("autoscaling.enabled=true",))
    query = named(docs, "ScaledObject", worker("devops"))["spec"]["triggers"][0]["metadata"]["query"]
    assert query == (f'sum(agentmesh_role_sessions{{namespace="{NAMESPACE}",service="{COORDINATOR}",'
                     f'role="devops"}}) or vector(0)')


def test_pending_timeout_outlasts_a_cold_start():
    docs = render(("keda-values.yaml",))
    args = args_of(named(docs, "Deployment", COORDINATOR))
    assert flag(args, "pending-timeout") == "5m"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["coordinator"]["pendingTimeout"] == "5m"
    assert values["autoscaling"]["coldStart"] == "2m"


@pytest.mark.parametrize("values_file", ["keda-values.yaml", "hpa-values.yaml"])
def test_no_replicas_under_an_autoscaler(values_file):
    docs = render((values_file,))
    owned = autoscaler_targets(docs)
    assert owned
    for d in of_kind(docs, "Deployment"):
        name = d["metadata"]["name"]
        if name in owned:
            assert "replicas" not in d["spec"], f"{name} is owned by a {owned[name]} yet sets replicas"
        else:
            assert "replicas" in d["spec"], name


def test_hpa_external_metric_and_mixed_kinds():
    docs = render(("hpa-values.yaml",))
    owned = autoscaler_targets(docs)
    assert owned[worker("frontend")] == "ScaledObject"
    assert worker("database") not in owned
    assert workers(docs)["database"]["spec"]["replicas"] == 2
    for role in ["architect", "backend", "devops", "security", "supervisor"]:
        assert owned[worker(role)] == "HorizontalPodAutoscaler", role
    hpa = named(docs, "HorizontalPodAutoscaler", worker("security"))
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["minReplicas"] == 1 and hpa["spec"]["maxReplicas"] == 5
    assert hpa["spec"]["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 300}}
    [metric] = hpa["spec"]["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"] == {
        "name": "agentmesh_role_demand",
        "selector": {"matchLabels": {"role": "security", "service": COORDINATOR}},
    }
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "2"}
    assert hpa["metadata"]["annotations"]["agentmesh.io/demand-query"] == (
        f'sum(agentmesh_role_sessions{{namespace="{NAMESPACE}",service="{COORDINATOR}",'
        f'role="security"}}) or vector(0)')
    # A custom selector becomes matchLabels (namespace is the adapter's to add).
    docs = render(("hpa-values.yaml",), sets=('autoscaling.prometheus.selector=job="c"\\,namespace="x"',))
    hpa = named(docs, "HorizontalPodAutoscaler", worker("backend"))
    assert hpa["spec"]["metrics"][0]["external"]["metric"]["selector"] == {
        "matchLabels": {"job": "c", "role": "backend"}}


def test_notes_give_the_adapter_rule_for_hpa():
    done = helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client",
                "-f", str(CHART / "ci" / "hpa-values.yaml"))
    assert done.returncode == 0, done.stderr
    notes = done.stdout.split("NOTES:", 1)[1]
    assert "metricsQuery: 'sum(agentmesh_role_sessions{<<.LabelMatchers>>}) or vector(0)'" in notes
    assert "as: agentmesh_role_demand" in notes
    assert f"kubectl -n {NAMESPACE} port-forward service/{COORDINATOR} 7780:7780" in notes
    assert f'kubectl -n {NAMESPACE} exec deploy/{COORDINATOR} -- meshctl run' in notes
    done = helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client")
    assert "externalRules" not in done.stdout.split("NOTES:", 1)[1]


# -------------------------------------------------------------------------- API keys

def test_api_key_comes_from_a_secret_only():
    docs = render(("keda-values.yaml",))
    payments = workers(docs)["payments"]
    container = payments["spec"]["template"]["spec"]["containers"][0]
    assert flag(container["args"], "api-key-env") == "AGENTMESH_API_KEY"
    [env] = [e for e in container["env"] if e["name"] == "AGENTMESH_API_KEY"]
    assert env == {"name": "AGENTMESH_API_KEY",
                   "valueFrom": {"secretKeyRef": {"name": "payments-openai", "key": "api-key"}}}
    # Roles without a Secret get no key variable and no flag.
    for role, d in workers(docs).items():
        if role != "payments":
            c = d["spec"]["template"]["spec"]["containers"][0]
            assert flag(c["args"], "api-key-env") is None
            assert not [e for e in c["env"] if "KEY" in e["name"]], role
    # The chart creates no Secret, and no ConfigMap names the Secret, its key or the variable.
    for name, docs in every_rendering():
        assert not of_kind(docs, "Secret"), name
        for cm in of_kind(docs, "ConfigMap"):
            text = json.dumps(cm)
            for needle in ("payments-openai", "api-key", "AGENTMESH_API_KEY", "ANTHROPIC_API_KEY", "sk-"):
                assert needle not in text, f"{name}: ConfigMap {cm['metadata']['name']} holds {needle}"
        for d in of_kind(docs, "Deployment"):
            for c in d["spec"]["template"]["spec"]["containers"]:
                for e in c.get("env", []):
                    if "KEY" in e["name"]:
                        assert "value" not in e and "secretKeyRef" in e["valueFrom"], (name, e)


def test_anthropic_key_from_its_secret():
    security = workers(render(("hpa-values.yaml",)))["security"]
    c = security["spec"]["template"]["spec"]["containers"][0]
    assert flag(c["args"], "brain") == "anthropic"
    assert flag(c["args"], "model") == "claude-sonnet-4-5"
    [env] = [e for e in c["env"] if e["name"] == "AGENTMESH_API_KEY"]
    assert env["valueFrom"]["secretKeyRef"] == {"name": "anthropic", "key": "ANTHROPIC_API_KEY"}


# -------------------------------------------------------------------- refused values

def _bad_cases():
    for path in sorted(BAD.glob("*.yaml")):
        expect = [line.split(":", 1)[1].strip() for line in path.read_text().splitlines()
                  if line.startswith("# expect:")]
        assert expect, f"{path.name} has no '# expect:' line"
        yield pytest.param(path, expect, id=path.stem)


@pytest.mark.parametrize("path,expect", list(_bad_cases()))
def test_bad_values_are_refused_with_a_clear_message(path, expect):
    done = helm(*template_args((str(path),)))
    assert done.returncode != 0, f"{path.name} was accepted"
    for text in expect:
        assert text in done.stderr, f"{path.name}: {text!r} not in:\n{done.stderr}"
    # helm lint refuses what the schema refuses. (It turns a template's `fail` into an INFO
    # line, so the checks of merged settings in _validate.tpl show in helm template and
    # helm install only.)
    if "values don't meet the specifications of the schema" in done.stderr:
        lint = helm("lint", "--strict", str(CHART), "-f", str(path))
        assert lint.returncode != 0, f"helm lint accepted {path.name}"
    else:
        assert "execution error" in done.stderr, done.stderr


def test_kube_version_floor():
    floor = re.fullmatch(r">=\s*(\d+\.\d+)\.0-0", CHART_YAML["kubeVersion"]).group(1)
    major, minor = map(int, floor.split("."))
    assert render(kube_version=f"{major}.{minor}.0")
    done = helm(*template_args(kube_version=f"{major}.{minor - 1}.0"))
    assert done.returncode != 0
    assert "kubeVersion" in done.stderr and "incompatible" in done.stderr


# ----------------------------------------------------------------------- coordinator

def test_coordinator_deployment_probes_and_rolling_update():
    docs = render()
    d = named(docs, "Deployment", COORDINATOR)
    spec = d["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    [c] = spec["template"]["spec"]["containers"]
    assert c["image"] == f"agentmesh/coordinator:{CHART_YAML['appVersion']}"
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"grpc": 7700, "http": 7780}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http", "scheme": "HTTP"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http", "scheme": "HTTP"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http", "scheme": "HTTP"}
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 120
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert "exec" not in c[probe], "the images have no shell"
    assert "command" not in c, "the image's entrypoint is mesh-coordinator"
    args = c["args"]
    assert flag(args, "listen") == "0.0.0.0:7700"
    assert flag(args, "http") == "0.0.0.0:7780"
    assert flag(args, "advertise") == "http://$(POD_IP):7700"
    assert flag(args, "advertise-http") == "http://$(POD_IP):7780"
    assert flag(args, "id") == "$(POD_NAME)"
    assert flag(args, "election-ttl") == "2"
    assert flag(args, "phase-timeout") == "5m"
    assert flag(args, "etcd") == ",".join(
        f"http://{ETCD}-{i}.{ETCD}.{NAMESPACE}.svc.cluster.local:2379" for i in range(3))
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # Soft anti-affinity over nodes by default.
    term = spec["template"]["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]


def test_one_service_for_grpc_and_http():
    docs = render()
    [svc] = [s for s in of_kind(docs, "Service") if s["metadata"]["labels"]["app.kubernetes.io/component"] == "coordinator"]
    assert svc["metadata"]["name"] == COORDINATOR
    assert svc["spec"]["type"] == "ClusterIP"
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert ports["grpc"]["port"] == 7700 and ports["grpc"]["targetPort"] == "grpc"
    assert ports["grpc"]["appProtocol"] == "kubernetes.io/h2c"
    assert ports["http"]["port"] == 7780 and ports["http"]["targetPort"] == "http"
    assert ports["http"]["appProtocol"] == "http"
    d = named(docs, "Deployment", COORDINATOR)
    assert svc["spec"]["selector"] == d["spec"]["selector"]["matchLabels"]
    pdb = named(docs, "PodDisruptionBudget", COORDINATOR)
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == d["spec"]["selector"]["matchLabels"]


def test_ingress_routes_to_the_http_port():
    docs = render(("external-etcd-values.yaml",))
    ing = named(docs, "Ingress", COORDINATOR)
    assert ing["spec"]["ingressClassName"] == "nginx"
    [rule] = ing["spec"]["rules"]
    assert rule["host"] == "agentmesh.example.com"
    assert rule["http"]["paths"][0]["backend"] == {"service": {"name": COORDINATOR, "port": {"name": "http"}}}
    assert not of_kind(render(), "Ingress")


def test_worker_pdbs_never_block_a_drain():
    docs = render(("keda-values.yaml",))
    by_role = workers(docs)
    for role, d in by_role.items():
        pdb = named(docs, "PodDisruptionBudget", worker(role))
        assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
        assert pdb["spec"]["selector"]["matchLabels"] == d["spec"]["selector"]["matchLabels"]
    assert not of_kind(render(sets=("workerDefaults.podDisruptionBudget.enabled=false",
                                    "coordinator.podDisruptionBudget.enabled=false",
                                    "etcd.podDisruptionBudget.enabled=false")), "PodDisruptionBudget")


# ------------------------------------------------------------------------------ etcd

@pytest.mark.parametrize("members", [3, 5])
def test_bundled_etcd_statefulset(members):
    docs = render(sets=(f"etcd.replicas={members}",))
    sts = named(docs, "StatefulSet", ETCD)
    headless = named(docs, "Service", ETCD)
    assert sts["spec"]["replicas"] == members
    assert sts["spec"]["serviceName"] == ETCD
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert {p["name"]: p["port"] for p in headless["spec"]["ports"]} == {"client": 2379, "peer": 2380, "metrics": 2381}
    assert headless["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]
    [claim] = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    [c] = sts["spec"]["template"]["spec"]["containers"]
    assert {m["name"]: m["mountPath"] for m in c["volumeMounts"]} == {"data": "/var/lib/etcd"}
    assert c["image"] == "agentmesh/etcd:3.4.23"
    domain = f"{ETCD}.{NAMESPACE}.svc.cluster.local"
    assert flag(c["args"], "initial-cluster") == ",".join(
        f"{ETCD}-{i}=http://{ETCD}-{i}.{domain}:2380" for i in range(members))
    assert flag(c["args"], "name") == "$(POD_NAME)"
    assert flag(c["args"], "initial-advertise-peer-urls") == f"http://$(POD_NAME).{domain}:2380"
    assert flag(c["args"], "advertise-client-urls") == f"http://$(POD_NAME).{domain}:2379"
    assert flag(c["args"], "initial-cluster-state") == "new"
    assert flag(c["args"], "data-dir") is None, "etcd 3.4 refuses a flag its image also sets as ETCD_DATA_DIR"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["ETCD_DATA_DIR"].startswith("/var/lib/etcd/")
    for arg in c["args"]:
        variable = "ETCD_" + arg.split("=", 1)[0].lstrip("-").replace("-", "_").upper()
        assert variable not in env, f"etcd 3.4 exits when {arg} and {variable} are both set"
    assert c["readinessProbe"]["httpGet"] == {"path": "/health", "port": "metrics"}
    assert "tcpSocket" in c["livenessProbe"]
    pdb = named(docs, "PodDisruptionBudget", ETCD)
    assert pdb["spec"]["minAvailable"] == members // 2 + 1
    coordinator = named(docs, "Deployment", COORDINATOR)
    assert flag(args_of(coordinator), "etcd") == ",".join(
        f"http://{ETCD}-{i}.{domain}:2379" for i in range(members))


def test_single_etcd_member_has_no_budget():
    docs = render(sets=("etcd.replicas=1",))
    assert named(docs, "StatefulSet", ETCD)["spec"]["replicas"] == 1
    assert not [p for p in of_kind(docs, "PodDisruptionBudget") if p["metadata"]["name"] == ETCD]


def test_external_etcd_renders_no_etcd_objects():
    docs = render(("external-etcd-values.yaml",), api_versions=MONITORING)
    assert not of_kind(docs, "StatefulSet")
    assert not [d for d in docs if d["metadata"]["labels"]["app.kubernetes.io/component"] == "etcd"]
    assert [p["metadata"]["name"] for p in of_kind(docs, "PodMonitor")] == [f"{FULLNAME}-workers"]
    endpoints = ("http://etcd-0.etcd.infra.svc.cluster.local:2379,http://etcd-1.etcd.infra.svc.cluster.local:2379,"
                 "http://etcd-2.etcd.infra.svc.cluster.local:2379")
    assert flag(args_of(named(docs, "Deployment", COORDINATOR)), "etcd") == endpoints


# -------------------------------------------------------------------------- security

@pytest.mark.parametrize("name,docs", RENDERINGS, ids=[n for n, _ in RENDERINGS])
def test_security_context_of_every_pod_and_container(name, docs):
    specs = list(pod_specs(docs))
    assert specs
    for d, spec in specs:
        where = f"{name}: {d['kind']}/{d['metadata']['name']}"
        assert spec["automountServiceAccountToken"] is False, where
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, where
        assert pod["runAsUser"] != 0 and pod["runAsGroup"] != 0, where
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), where
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert sc.get("privileged", False) is False, where
            assert "command" not in c, f"{where}: the images' entrypoints are the binaries (no shell)"
            assert c.get("resources", {}).get("requests"), f"{where}: no resource requests"
    for sa in of_kind(docs, "ServiceAccount"):
        assert sa["automountServiceAccountToken"] is False


def test_network_policies():
    assert not of_kind(render(), "NetworkPolicy")
    docs = render(sets=("networkPolicy.enabled=true",))
    policies = {p["metadata"]["name"]: p for p in of_kind(docs, "NetworkPolicy")}
    assert sorted(policies) == sorted([f"{FULLNAME}-worker", COORDINATOR, ETCD])
    sel = lambda component: {"app.kubernetes.io/name": "agentmesh", "app.kubernetes.io/instance": RELEASE,
                             "app.kubernetes.io/component": component}
    peer = lambda component: {"podSelector": {"matchLabels": sel(component)}}
    tcp = lambda *ports: [{"protocol": "TCP", "port": p} for p in ports]

    w = policies[f"{FULLNAME}-worker"]["spec"]
    assert w["podSelector"]["matchLabels"] == sel("worker")
    assert w["policyTypes"] == ["Ingress", "Egress"]
    # Nothing may reach a worker but Prometheus, on its metrics port.
    prometheus = {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}
    assert w["ingress"] == [{"from": [prometheus], "ports": tcp(9090)}]
    closed = render(sets=("networkPolicy.enabled=true", "networkPolicy.metrics=null"))
    assert named(closed, "NetworkPolicy", f"{FULLNAME}-worker")["spec"]["ingress"] == []
    assert {"to": [peer("coordinator")], "ports": tcp(7700)} in w["egress"]
    assert {"to": [peer("etcd")], "ports": tcp(2379)} in w["egress"]
    dns = [r for r in w["egress"] if {"protocol": "UDP", "port": 53} in r["ports"]]
    assert dns and {"protocol": "TCP", "port": 53} in dns[0]["ports"]
    assert {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": tcp(443)} in w["egress"]

    e = policies[ETCD]["spec"]
    assert e["podSelector"]["matchLabels"] == sel("etcd")
    sources = [p for rule in e["ingress"] for p in rule["from"]]
    agentmesh = [peer("coordinator"), peer("worker"), peer("etcd")]
    for p in sources:
        # Only this release's pods, and Prometheus on the metrics port.
        assert p in agentmesh or "namespaceSelector" in p, p
    for rule in e["ingress"]:
        if any("namespaceSelector" in p for p in rule["from"]):
            assert rule["ports"] == tcp(2381)

    c = policies[COORDINATOR]["spec"]
    assert {"from": [peer("worker"), peer("coordinator")], "ports": tcp(7700)} in c["ingress"]
    assert {"from": [{"podSelector": {"matchLabels": {"agentmesh.io/client": "true"}}}],
            "ports": tcp(7700, 7780)} in c["ingress"]

    # With an external etcd: egress to its CIDRs, the model APIs' exceptions, no etcd policy.
    docs = render(("external-etcd-values.yaml",))
    policies = {p["metadata"]["name"]: p for p in of_kind(docs, "NetworkPolicy")}
    assert ETCD not in policies
    w = policies[f"{FULLNAME}-worker"]["spec"]
    assert {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": tcp(2379)} in w["egress"]
    assert {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]}}],
            "ports": tcp(443)} in w["egress"]
    c = policies[COORDINATOR]["spec"]
    assert {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": tcp(2379)} in c["egress"]


# ------------------------------------------------------------------------ monitoring

def test_monitoring_objects_only_with_the_api():
    for f in CI_FILES:
        docs = render((f,))
        assert not of_kind(docs, "ServiceMonitor") and not of_kind(docs, "PodMonitor"), f
    docs = render(api_versions=MONITORING)
    sm = named(docs, "ServiceMonitor", COORDINATOR)
    svc = named(docs, "Service", COORDINATOR)
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert sm["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "scheme": "http", "interval": "15s"}]
    assert "http" in [p["name"] for p in svc["spec"]["ports"]]
    pm = named(docs, "PodMonitor", ETCD)
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    sts = named(docs, "StatefulSet", ETCD)
    assert pm["spec"]["selector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]
    docs = render(("external-etcd-values.yaml",), api_versions=MONITORING)
    assert named(docs, "ServiceMonitor", COORDINATOR)["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert not of_kind(render(api_versions=MONITORING, sets=("monitoring.serviceMonitor.enabled=false",)),
                       "ServiceMonitor")


def test_workers_serve_metrics_and_a_podmonitor_scrapes_every_role():
    docs = render(api_versions=MONITORING)
    for d in workers(docs).values():
        assert flag(args_of(d), "metrics-listen") == "0.0.0.0:9090"
        container = d["spec"]["template"]["spec"]["containers"][0]
        assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in container["ports"]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    pm = named(docs, "PodMonitor", f"{FULLNAME}-workers")
    assert pm["spec"]["podMetricsEndpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]
    selector = pm["spec"]["selector"]["matchLabels"].items()
    for d in workers(docs).values():
        assert selector <= d["spec"]["template"]["metadata"]["labels"].items(), d["metadata"]["name"]
    port = render(api_versions=MONITORING, sets=("monitoring.workerMetricsPort=9464",))
    assert {flag(args_of(d), "metrics-listen") for d in workers(port).values()} == {"0.0.0.0:9464"}


def test_the_alert_rules_render_as_a_prometheusrule_only_with_the_api():
    import yaml
    rules = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    for f in CI_FILES:
        assert not of_kind(render((f,)), "PrometheusRule"), f
    docs = render(api_versions=MONITORING)
    rule = named(docs, "PrometheusRule", FULLNAME)
    assert rule["spec"]["groups"] == rules["groups"], "the chart renders files/prometheus-rules.yaml as it is"
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {"AgentmeshNoLeader", "AgentmeshRoleStarved", "AgentmeshTurnFailureRate",
            "AgentmeshStoreWritesSlow", "AgentmeshEtcdUnavailable"} <= alerts
    assert not of_kind(render(api_versions=MONITORING, sets=("monitoring.prometheusRule.enabled=false",)),
                       "PrometheusRule")


# ------------------------------------------------------------ the validator itself

def test_the_schema_validator_is_not_vacuous():
    docs = render(("keda-values.yaml",), api_versions=MONITORING, kube_version="1.37.0")
    version = "1.37.0"
    for d in docs:
        assert validate_manifests.validate_document(d, version) == [], d["metadata"]["name"]
    deployment = json.loads(json.dumps(named(docs, "Deployment", COORDINATOR)))
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsRoot"] = True
    assert validate_manifests.validate_document(deployment, version)
    deployment = json.loads(json.dumps(named(docs, "Deployment", COORDINATOR)))
    deployment["spec"]["replicas"] = "3"
    assert validate_manifests.validate_document(deployment, version)
    so = json.loads(json.dumps(named(docs, "ScaledObject", worker("backend"))))
    so["spec"]["triggers"][0]["metadata"]["threshold"] = 2  # KEDA's metadata is map[string]string
    assert validate_manifests.validate_document(so, version)
    so = json.loads(json.dumps(named(docs, "ScaledObject", worker("backend"))))
    so["spec"]["advanced"] = {"horizontalPodAutoscalerConfig": {"behavior": {"scaleDown": {"stabilisation": 1}}}}
    assert validate_manifests.validate_document(so, version)
    sm = json.loads(json.dumps(named(docs, "ServiceMonitor", COORDINATOR)))
    sm["spec"]["endpoints"][0]["interval"] = "15 seconds"
    assert validate_manifests.validate_document(sm, version)
    assert validate_manifests.validate_document({"apiVersion": "example.com/v1", "kind": "Widget"}, version)
    # 1.25 does not know PodDisruptionBudget.spec.unhealthyPodEvictionPolicy: why the floor is above it.
    pdb = named(docs, "PodDisruptionBudget", COORDINATOR)
    assert validate_manifests.validate_document(pdb, "1.25.0")


# -------------------------------------------------------------------------- security

def test_auth_is_on_by_default_with_a_secret_the_user_creates():
    docs = render()
    [coordinator] = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == COORDINATOR]
    spec = coordinator["spec"]["template"]["spec"]
    c = spec["containers"][0]
    assert flag(c["args"], "auth-file") == "/etc/agentmesh/auth/auth.toml"
    assert "--insecure" not in c["args"]
    [auth] = [v for v in spec["volumes"] if v["name"] == "auth"]
    assert auth["secret"]["secretName"] == f"{FULLNAME}-auth"
    # The coordinators get the auth file and an operator's token, never a worker's.
    assert [i["key"] for i in auth["secret"]["items"]] == ["auth.toml", "operator-token"]
    for role, d in workers(docs).items():
        wspec = d["spec"]["template"]["spec"]
        wc = wspec["containers"][0]
        assert flag(wc["args"], "token-file") == "/etc/agentmesh/auth/token", role
        [wauth] = [v for v in wspec["volumes"] if v["name"] == "auth"]
        assert wauth["secret"]["items"] == [{"key": "worker-token", "path": "token"}], role
    # The chart creates no Secret and no Certificate unless asked.
    assert not of_kind(docs, "Secret") and not of_kind(docs, "Certificate")


def test_auth_off_passes_insecure_and_mounts_no_tokens():
    docs = render(sets=("auth.enabled=false",))
    for d in of_kind(docs, "Deployment"):
        spec = d["spec"]["template"]["spec"]
        assert not [v for v in spec.get("volumes", []) if v["name"] == "auth"]
        if d["metadata"]["name"] == COORDINATOR:
            assert "--insecure" in spec["containers"][0]["args"]


def test_tls_mtls_cert_manager_and_signing_keys():
    docs = render(("tls-values.yaml",))
    [coordinator] = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == COORDINATOR]
    c = coordinator["spec"]["template"]["spec"]["containers"][0]
    server_name = f"{COORDINATOR}.{NAMESPACE}.svc"
    assert flag(c["args"], "tls-cert") == "/etc/agentmesh/tls/tls.crt"
    assert flag(c["args"], "tls-client-ca") == "/etc/agentmesh/tls/ca.crt"
    assert flag(c["args"], "tls-server-name") == server_name
    assert flag(c["args"], "advertise").startswith("https://")
    assert flag(c["args"], "signing-key") == "/etc/agentmesh/signing/coordinator.key"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["scheme"] == "HTTPS", probe
    [cert] = of_kind(docs, "Certificate")
    assert cert["spec"]["secretName"] == f"{FULLNAME}-tls"
    assert server_name in cert["spec"]["dnsNames"]
    assert cert["spec"]["uris"] == ["spiffe://agentmesh/agentmesh/coordinator"]
    assert set(cert["spec"]["usages"]) == {"server auth", "client auth"}
    assert cert["spec"]["issuerRef"] == {"name": "agentmesh-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    for role, d in workers(docs).items():
        spec = d["spec"]["template"]["spec"]
        wc = spec["containers"][0]
        assert flag(wc["args"], "tls-ca") == "/etc/agentmesh/tls/ca.crt", role
        assert flag(wc["args"], "tls-server-name") == server_name, role
        [tls] = [v for v in spec["volumes"] if v["name"] == "tls"]
        assert tls["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}], "workers get the CA only"
        [signing] = [v for v in spec["volumes"] if v["name"] == "signing"]
        assert signing["secret"] == {"secretName": "agentmesh-signing-keys", "defaultMode": 0o440,
                                     "items": [{"key": role, "path": "worker.key"}]}
        [auth] = [v for v in spec["volumes"] if v["name"] == "auth"]
        if role == "backend":
            assert auth["secret"]["secretName"] == "backend-pool-token"
            assert auth["secret"]["items"] == [{"key": "token", "path": "token"}]
        else:
            assert auth["secret"]["secretName"] == f"{FULLNAME}-auth"


def test_cert_manager_without_an_issuer_is_refused():
    out = helm(*template_args(sets=("tls.enabled=true", "tls.certManager.enabled=true")))
    assert out.returncode != 0
    assert "tls.certManager.issuerRef.name" in out.stderr


# -------------------------------------------------------------------------- etcd TLS

ETCD_TLS_FLAGS = ("etcd-ca", "etcd-cert", "etcd-key", "etcd-password-file")


def _etcd_clients(docs):
    """(name, pod spec, container) of the coordinators and every role's workers."""
    for d in [named(docs, "Deployment", COORDINATOR)] + list(workers(docs).values()):
        spec = d["spec"]["template"]["spec"]
        yield d["metadata"]["name"], spec, spec["containers"][0]


def _volume(spec, name):
    found = [v for v in spec.get("volumes", []) if v["name"] == name]
    return found[0] if found else None


def _mount(container, name):
    found = [m for m in container.get("volumeMounts", []) if m["name"] == name]
    return found[0] if found else None


def test_etcd_tls_is_off_by_default():
    docs = render()
    for name, spec, c in _etcd_clients(docs):
        assert all(flag(c["args"], f) is None for f in ETCD_TLS_FLAGS), name
        assert flag(c["args"], "etcd").startswith("http://"), name
        assert _volume(spec, "etcd-tls") is None and _volume(spec, "etcd-auth") is None, name
        assert "MESH_ETCD_USER" not in [e["name"] for e in c["env"]], name
    [etcd] = named(docs, "StatefulSet", ETCD)["spec"]["template"]["spec"]["containers"]
    assert not [a for a in etcd["args"] if "cert" in a], etcd["args"]
    assert not of_kind(docs, "Certificate")


def test_bundled_etcd_over_tls_with_cert_manager():
    docs = render(("etcd-tls-values.yaml",))
    domain = f"{ETCD}.{NAMESPACE}.svc.cluster.local"
    members = [f"{ETCD}-{i}.{domain}" for i in range(3)]
    sts = named(docs, "StatefulSet", ETCD)
    spec = sts["spec"]["template"]["spec"]
    [c] = spec["containers"]
    args = c["args"]
    assert flag(args, "listen-client-urls") == "https://0.0.0.0:2379"
    assert flag(args, "advertise-client-urls") == f"https://$(POD_NAME).{domain}:2379"
    assert flag(args, "listen-peer-urls") == "https://0.0.0.0:2380"
    assert flag(args, "initial-advertise-peer-urls") == f"https://$(POD_NAME).{domain}:2380"
    assert flag(args, "initial-cluster") == ",".join(f"{ETCD}-{i}=https://{m}:2380" for i, m in enumerate(members))
    for f in ("cert-file", "peer-cert-file"):
        assert flag(args, f) == "/etc/etcd/tls/tls.crt", f
    for f in ("key-file", "peer-key-file"):
        assert flag(args, f) == "/etc/etcd/tls/tls.key", f
    for f in ("trusted-ca-file", "peer-trusted-ca-file"):
        assert flag(args, f) == "/etc/etcd/tls/ca.crt", f
    assert "--client-cert-auth" in args and "--peer-client-cert-auth" in args
    # Probes and Prometheus keep their plain metrics port.
    assert flag(args, "listen-metrics-urls") == "http://0.0.0.0:2381"
    assert c["readinessProbe"]["httpGet"] == {"path": "/health", "port": "metrics"}
    env = {e["name"] for e in c["env"]}
    for arg in args:
        variable = "ETCD_" + arg.split("=", 1)[0].lstrip("-").replace("-", "_").upper()
        assert variable not in env, f"etcd 3.4 exits when {arg} and {variable} are both set"
    assert _mount(c, "tls") == {"name": "tls", "mountPath": "/etc/etcd/tls", "readOnly": True}
    assert _volume(spec, "tls")["secret"] == {
        "secretName": f"{FULLNAME}-etcd-server", "defaultMode": 0o440,
        "items": [{"key": k, "path": k} for k in ("ca.crt", "tls.crt", "tls.key")]}
    client_port = [p for p in named(docs, "Service", ETCD)["spec"]["ports"] if p["name"] == "client"][0]
    assert client_port["appProtocol"] == "https"

    endpoints = ",".join(f"https://{m}:2379" for m in members)
    for name, pod, wc in _etcd_clients(docs):
        assert flag(wc["args"], "etcd") == endpoints, name
        assert flag(wc["args"], "etcd-ca") == "/etc/agentmesh/etcd/ca.crt", name
        assert flag(wc["args"], "etcd-cert") == "/etc/agentmesh/etcd/tls.crt", name
        assert flag(wc["args"], "etcd-key") == "/etc/agentmesh/etcd/tls.key", name
        assert flag(wc["args"], "etcd-password-file") is None, name
        assert _mount(wc, "etcd-tls") == {"name": "etcd-tls", "mountPath": "/etc/agentmesh/etcd", "readOnly": True}
        # The client Secret only: no pod but the members holds the members' key.
        assert _volume(pod, "etcd-tls")["secret"] == {
            "secretName": f"{FULLNAME}-etcd-client", "defaultMode": 0o440,
            "items": [{"key": k, "path": k} for k in ("ca.crt", "tls.crt", "tls.key")]}, name
        assert f"{FULLNAME}-etcd-server" not in json.dumps(pod), name

    certs = {d["metadata"]["name"]: d["spec"] for d in of_kind(docs, "Certificate")}
    assert sorted(certs) == [f"{ETCD}-client", f"{ETCD}-server"], "no coordinator Certificate: tls is off"
    issuer = {"name": "agentmesh-etcd-ca", "kind": "Issuer", "group": "cert-manager.io"}
    server, client = certs[f"{ETCD}-server"], certs[f"{ETCD}-client"]
    assert server["secretName"] == f"{FULLNAME}-etcd-server"
    assert set(members) <= set(server["dnsNames"]), "etcd checks a peer's certificate names its address"
    assert "localhost" in server["dnsNames"] and server["ipAddresses"] == ["127.0.0.1"]
    assert set(server["usages"]) == {"server auth", "client auth"}, "members are each other's clients"
    assert client["secretName"] == f"{FULLNAME}-etcd-client"
    assert client["usages"] == ["client auth"] and client["commonName"] == "agentmesh"
    assert "dnsNames" not in client
    assert server["issuerRef"] == issuer and client["issuerRef"] == issuer


def test_bundled_etcd_over_tls_from_secrets_of_your_own():
    docs = render(sets=("etcd.tls.enabled=true", "etcd.tls.clientSecretName=my-etcd-client",
                        "etcd.tls.serverSecretName=my-etcd-server", "etcd.replicas=5"))
    assert not of_kind(docs, "Certificate")
    spec = named(docs, "StatefulSet", ETCD)["spec"]["template"]["spec"]
    assert _volume(spec, "tls")["secret"]["secretName"] == "my-etcd-server"
    for name, pod, _ in _etcd_clients(docs):
        assert _volume(pod, "etcd-tls")["secret"]["secretName"] == "my-etcd-client", name


def test_etcd_certificates_default_to_the_coordinators_issuer():
    sets = ("tls.enabled=true", "tls.certManager.enabled=true", "tls.certManager.issuerRef.name=mesh-ca",
            "tls.certManager.issuerRef.kind=ClusterIssuer", "etcd.tls.enabled=true", "etcd.tls.certManager.enabled=true")
    docs = render(sets=sets)
    certs = {d["metadata"]["name"]: d["spec"] for d in of_kind(docs, "Certificate")}
    assert sorted(certs) == sorted([COORDINATOR, f"{ETCD}-client", f"{ETCD}-server"])
    for name in (f"{ETCD}-client", f"{ETCD}-server"):
        assert certs[name]["issuerRef"] == {"name": "mesh-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    out = helm(*template_args(sets=("etcd.tls.enabled=true", "etcd.tls.certManager.enabled=true")))
    assert out.returncode != 0
    assert "etcd.tls.certManager.issuerRef.name" in out.stderr


def test_external_etcd_over_tls_with_a_user():
    docs = render(("external-etcd-tls-values.yaml",), api_versions=MONITORING)
    assert not of_kind(docs, "StatefulSet") and not of_kind(docs, "Certificate")
    endpoints = ",".join(f"https://etcd-{i}.etcd.infra.svc.cluster.local:2379" for i in range(3))
    for name, pod, c in _etcd_clients(docs):
        assert flag(c["args"], "etcd") == endpoints, name
        assert flag(c["args"], "etcd-ca") == "/etc/agentmesh/etcd/ca.crt", name
        assert flag(c["args"], "etcd-cert") == "/etc/agentmesh/etcd/tls.crt", name
        assert flag(c["args"], "etcd-password-file") == "/etc/agentmesh/etcd-auth/password", name
        [user] = [e for e in c["env"] if e["name"] == "MESH_ETCD_USER"]
        assert user["valueFrom"]["secretKeyRef"] == {"name": "infra-etcd-user", "key": "user"}, name
        assert "MESH_ETCD_PASSWORD" not in [e["name"] for e in c["env"]], "the password is a file, not a variable"
        assert _volume(pod, "etcd-auth")["secret"] == {
            "secretName": "infra-etcd-user", "defaultMode": 0o440, "items": [{"key": "password", "path": "password"}]}
        assert _mount(c, "etcd-auth") == {"name": "etcd-auth", "mountPath": "/etc/agentmesh/etcd-auth", "readOnly": True}
        assert _volume(pod, "etcd-tls")["secret"]["secretName"] == "infra-etcd-client", name
        # The coordinators' TLS (a Secret of your own) beside etcd's: different mounts.
        assert flag(c["args"], "tls-ca") in (None, "/etc/agentmesh/tls/ca.crt")
    coordinator = named(docs, "Deployment", COORDINATOR)["spec"]["template"]["spec"]
    assert _volume(coordinator, "tls")["secret"]["secretName"] == "mesh-coordinator-tls"
    # An etcd that wants no client certificate: its CA alone.
    docs = render(("external-etcd-tls-values.yaml",), sets=("etcd.tls.clientCertificate=false",))
    for name, pod, c in _etcd_clients(docs):
        assert flag(c["args"], "etcd-ca") == "/etc/agentmesh/etcd/ca.crt", name
        assert flag(c["args"], "etcd-cert") is None and flag(c["args"], "etcd-key") is None, name
        assert _volume(pod, "etcd-tls")["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}], name


def test_notes_name_the_etcd_secrets():
    def notes(*args):
        done = helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client", *args)
        assert done.returncode == 0, done.stderr
        return done.stdout.split("NOTES:", 1)[1]
    bundled = notes("--set", "etcd.tls.enabled=true")
    assert (f"etcd over TLS: the pods wait for the Secret {FULLNAME}-etcd-client (ca.crt, tls.crt, tls.key) "
            f"for coordinators and workers and {FULLNAME}-etcd-server (ca.crt, tls.crt, tls.key) for the members"
            in bundled), bundled
    external = notes("-f", str(CHART / "ci" / "external-etcd-tls-values.yaml"))
    assert "the pods wait for the Secret infra-etcd-client (ca.crt, tls.crt, tls.key) for coordinators and workers." in external
    assert "etcd user: from the Secret infra-etcd-user (user, password)." in external
    assert "etcd over TLS" not in notes()
