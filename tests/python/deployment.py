"""The deployment files agree with the binary they run, and with what a
production cluster needs of them.

Kubernetes, each overlay rendered by kustomize:
- every object is valid against the Kubernetes 1.30 schemas;
- every Herald container's command, flags and environment — as Kubernetes
  would really give it: ConfigMaps, Secrets (the overlay's, or placeholders
  for the ones created out of band), the downward API, the variables of
  Service links, and the files of its mounts — pass `herald check`;
- each service gets only its own secrets (the JWT key only to edges, the
  database URL only to notify), from Secrets, never from a ConfigMap;
- probes and Services point at ports the containers listen on; liveness
  is generous; edges get a preStop pause and the time to drain
  (terminationGracePeriodSeconds >= preStop + drain window + shutdown grace
  + margin, read from the ConfigMap the pod really gets);
- edges request the memory they may use and are told their limit, and the
  autoscaler aims at no more than half the connection budget that gives; every pod runs with the
  RuntimeDefault seccomp profile and without an API token, under its own
  ServiceAccount; every Herald Deployment spreads over zones and nodes;
- autoscalers own their Deployment's replica count and scale on metrics
  the monitoring files serve and the services export;
- NetworkPolicies deny by default and let through exactly the traffic of
  the map in docs/OPERATIONS.md (an evaluator answers each question);
- the prod Ingress (and the Gateway API example) route exactly the edge's
  client endpoints, none of its operations endpoints.
Production: a 3-node NATS cluster (k8s/nats/values.yaml) named by the seed
list, R3 streams, NATS credentials and CA mounted read-only. Monitoring:
alert rules, the dashboard and the adapter rules name only metrics the Rust
sources export. docker compose: every Herald service's command and
environment pass `herald check`, and everything it depends on is a service
of the file.

usage: python deployment.py KUBECTL HERALD_BIN REPO_ROOT
"""

import base64
import glob
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import tomllib

import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.30.0"
SERVICES = {"edge", "routing", "presence", "notify"}

# What each service may read from a Secret; anything else reaching it from
# a Secret is a leak (the JWT key signs client tokens: edges verify them,
# nothing else; the database URL holds a password: notify's alone).
SECRET_SETTINGS = {"HERALD_JWT_SECRET", "HERALD_API_KEYS", "HERALD_DATABASE_URL"}
SECRETS_OF = {
    "edge": {"HERALD_JWT_SECRET", "HERALD_API_KEYS"},
    "routing": {"HERALD_API_KEYS"},
    "presence": {"HERALD_API_KEYS"},
    "notify": {"HERALD_API_KEYS", "HERALD_DATABASE_URL"},
}

# Secrets the prod overlay reads but does not make: created out of band
# (docs/OPERATIONS.md, "Kubernetes", says how; k8s/examples/external-
# secrets.yaml makes them with External Secrets). Placeholder contents,
# with the keys the docs name, for `herald check`.
PLACEHOLDER_CA = """-----BEGIN CERTIFICATE-----
placeholder: deployment.py does not connect to NATS
-----END CERTIFICATE-----
"""
PLACEHOLDER_CREDS = """-----BEGIN NATS USER JWT-----
placeholder
------END NATS USER JWT------
"""
OUT_OF_BAND = {
    "herald-edge-secrets": {
        "HERALD_JWT_SECRET": "a-production-secret-0123456789abcdef",
        "HERALD_API_KEYS": "internal-key-0123456789",
    },
    "herald-routing-secrets": {"HERALD_API_KEYS": "internal-key-0123456789,app-key-0123456789"},
    "herald-presence-secrets": {"HERALD_API_KEYS": "internal-key-0123456789"},
    "herald-notify-secrets": {
        "HERALD_API_KEYS": "internal-key-0123456789,app-key-0123456789",
        "HERALD_DATABASE_URL": "postgres://herald@db/herald",
    },
    "herald-nats": {
        "ca.crt": PLACEHOLDER_CA,
        **{f"{s}.creds": PLACEHOLDER_CREDS for s in sorted(SERVICES)},
    },
    # per push app: key files named in notify's TOML; optional
    "herald-push": {},
    # the Ingress certificate (cert-manager, or `kubectl create secret tls`)
    "herald-tls": {"tls.crt": "", "tls.key": ""},
}
# made by something other than External Secrets in the usual setup
NOT_FROM_EXTERNAL_SECRETS = {"herald-push", "herald-tls"}

# The edge's HTTP port answers these for operators, Prometheus and the
# kubelet; no route from outside may reach them.
OPS_PATHS = {"/metrics", "/stats", "/admin", "/admin/events", "/readyz", "/healthz"}
# The demo page and the icon of the demo and admin pages: served by the
# edge, not meant for production clients.
NOT_EXPOSED = {"/", "/favicon.ico"}

GRACE_MARGIN_SECS = 5
PRESTOP_MIN_SECS = 3

# Namespaces the NetworkPolicies name (docs/OPERATIONS.md, "Network policies").
INGRESS_NS = {"kubernetes.io/metadata.name": "ingress-nginx"}
MONITORING_NS = {"kubernetes.io/metadata.name": "monitoring"}
APP_NS = {"kubernetes.io/metadata.name": "my-app", "herald-server-api": "true"}
OTHER_NS = {"kubernetes.io/metadata.name": "somewhere-else"}
KUBE_DNS = ({"kubernetes.io/metadata.name": "kube-system"}, {"k8s-app": "kube-dns"}, [53])
NATS_NS = {"kubernetes.io/metadata.name": "nats"}


def fail(message):
    raise SystemExit(f"FAIL: {message}")


def render(kubectl, path):
    out = subprocess.run(
        [kubectl, "kustomize", path], check=True, capture_output=True, text=True
    )
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def named(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def quantity(text):
    """A Kubernetes quantity ("4Gi", "500m", "1") as a number."""
    text = str(text)
    suffixes = {
        "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
        "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "m": 10**-3,
    }
    for suffix, factor in suffixes.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def exported_metrics(root):
    """Metric names the Rust sources export (metrics::gauge!/counter!/
    histogram! with a literal name), tests excluded."""
    names = set()
    pattern = re.compile(r'(?:gauge|counter|histogram)!\(\s*"(herald_[a-z0-9_]+)"')
    for path in glob.glob(os.path.join(root, "crates", "**", "*.rs"), recursive=True):
        if f"{os.sep}tests{os.sep}" in path:
            continue
        with open(path) as f:
            names.update(pattern.findall(f.read()))
    return names


def rust_defaults(root):
    """The numeric defaults of `impl Default for Config` and of its
    sections' (`EdgeConfig`, …) in crates/core/src/config.rs, for settings
    an overlay leaves out (a variable is the setting's name, whatever its
    table)."""
    source = open(os.path.join(root, "crates", "core", "src", "config.rs")).read()
    defaults = {}
    for start in (m.start() for m in re.finditer(r"impl Default for \w*Config \{", source)):
        body = source[start : source.index("\n}\n", start)]
        found = re.findall(r"^\s+(\w+): ([\d_]+),$", body, re.M)
        defaults.update({k: int(v.replace("_", "")) for k, v in found})
    return defaults


def memory_share(root):
    """The share of its memory limit an edge gives connections
    (MEMORY_FOR_CONNECTIONS, crates/edge/src/budget.rs)."""
    source = open(os.path.join(root, "crates", "edge", "src", "budget.rs")).read()
    return float(re.search(r"const MEMORY_FOR_CONNECTIONS: f64 = ([\d.]+);", source).group(1))


def connection_budget(root, env):
    """The connections an edge with `env` admits, as crates/edge/src/
    budget.rs counts them — less descriptors, which only the node knows."""
    defaults = rust_defaults(root)
    get = lambda name: int(env.get(f"HERALD_{name.upper()}", defaults[name]))  # noqa: E731
    budget = get("max_connections")
    if get("memory_limit_mb"):
        usable = get("memory_limit_mb") * 2**20 * memory_share(root)
        budget = min(budget, int(usable // (get("memory_per_connection_kb") * 1024)))
    return budget


def metrics_in(expr):
    """The herald_* metrics a PromQL expression reads."""
    names = set()
    for name in re.findall(r"\bherald_[a-z0-9_]+", expr):
        names.add(re.sub(r"_(bucket|sum|count)$", "", name))
    return names


def check_exported(names, exported, where):
    for name in sorted(names):
        if name not in exported:
            fail(f"{where} reads {name}, which no Herald service exports (crates/**/*.rs)")


# --- what Kubernetes gives a container ------------------------------------


def service_link_env(services):
    """The variables Kubernetes adds for every Service of the namespace that
    has a cluster IP, unless the pod says enableServiceLinks: false."""
    env = {}
    for name, service in services.items():
        if service["spec"].get("clusterIP") == "None":
            continue
        prefix = name.upper().replace("-", "_")
        ports = service["spec"]["ports"]
        env[f"{prefix}_SERVICE_HOST"] = "10.96.0.10"
        env[f"{prefix}_SERVICE_PORT"] = str(ports[0]["port"])
        env[f"{prefix}_PORT"] = f"tcp://10.96.0.10:{ports[0]['port']}"
        for port in ports:
            proto = port.get("protocol", "TCP")
            base = f"{prefix}_PORT_{port['port']}_{proto}"
            env[base] = f"{proto.lower()}://10.96.0.10:{port['port']}"
            env[f"{base}_PROTO"] = proto.lower()
            env[f"{base}_PORT"] = str(port["port"])
            env[f"{base}_ADDR"] = "10.96.0.10"
            if "name" in port:
                env[f"{prefix}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = str(port["port"])
    return env


def secret_data(name, secrets):
    """A Secret's keys and values: the overlay's, else the out-of-band
    placeholder; None when neither exists."""
    if name in secrets:
        data = {k: base64.b64decode(v).decode() for k, v in secrets[name].get("data", {}).items()}
        data.update(secrets[name].get("stringData", {}))
        return data
    return OUT_OF_BAND.get(name)


def container_env(pod, container, configmaps, secrets, services, where):
    """The environment Kubernetes would give the container, and which
    settings came from Secrets."""
    env = {}
    from_secrets = set()
    if pod.get("enableServiceLinks", True):
        env.update(service_link_env(services))
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            if name not in configmaps:
                fail(f"{where}: envFrom ConfigMap {name} does not exist")
            env.update(configmaps[name]["data"])
        if "secretRef" in source:
            name = source["secretRef"]["name"]
            data = secret_data(name, secrets)
            if data is None:
                fail(f"{where}: envFrom Secret {name} is neither in the overlay nor documented as created out of band")
            env.update(data)
            from_secrets.update(data)
    for item in container.get("env", []):
        name = item["name"]
        if "value" in item:
            env[name] = item["value"]
            continue
        source = item.get("valueFrom", {})
        if "fieldRef" in source:
            env[name] = "pod-0"
        elif "resourceFieldRef" in source:
            ref = source["resourceFieldRef"]
            kind, resource = ref["resource"].split(".", 1)
            value = container.get("resources", {}).get(kind, {}).get(resource)
            if value is None:
                # Kubernetes would give the node's allocatable: not the pod's
                fail(f"{where}: {name} reads {ref['resource']}, which the container does not set")
            divisor = quantity(ref.get("divisor", "1"))
            env[name] = str(math.ceil(quantity(value) / divisor))
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            data = secret_data(ref["name"], secrets)
            if data is None or ref["key"] not in data:
                fail(f"{where}: {name} reads Secret {ref['name']} key {ref['key']}, which is not there")
            env[name] = data[ref["key"]]
            from_secrets.add(name)
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[name] = configmaps[ref["name"]]["data"][ref["key"]]
        else:
            fail(f"{where}: {name} has a source deployment.py does not know")
    return env, from_secrets


def lay_out_mounts(pod, container, configmaps, secrets, tmp, where):
    """Writes each mounted ConfigMap or Secret under `tmp` as the kubelet
    would lay it out; returns (mountPath, local path, readOnly) for each."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    laid = []
    for i, mount in enumerate(container.get("volumeMounts", [])):
        volume = volumes.get(mount["name"])
        if volume is None:
            fail(f"{where}: mounts volume {mount['name']}, which the pod does not have")
        source = {}
        if "configMap" in volume:
            source = volume["configMap"]
            cm = configmaps.get(source["name"])
            if cm is None:
                if source.get("optional"):
                    files = {}
                else:
                    fail(f"{where}: volume {mount['name']}: ConfigMap {source['name']} does not exist")
            else:
                files = dict(cm.get("data", {}))
        elif "secret" in volume:
            source = volume["secret"]
            files = secret_data(source["secretName"], secrets)
            if files is None:
                if not source.get("optional"):
                    fail(f"{where}: volume {mount['name']}: Secret {source['secretName']} is neither in the overlay nor documented as created out of band")
                files = {}
        else:
            files = {}
        if "items" in source:
            picked = {}
            for item in source["items"]:
                if item["key"] not in files:
                    fail(f"{where}: volume {mount['name']} projects key {item['key']}, which its source does not have")
                picked[item["path"]] = files[item["key"]]
            files = picked
        local = os.path.join(tmp, f"mount{i}")
        if "subPath" in mount:
            if mount["subPath"] not in files:
                fail(f"{where}: subPath {mount['subPath']} is not a key of volume {mount['name']}")
            with open(local, "w") as f:
                f.write(files[mount["subPath"]])
        else:
            os.makedirs(local)
            for key, content in files.items():
                os.makedirs(os.path.dirname(os.path.join(local, key)), exist_ok=True)
                with open(os.path.join(local, key), "w") as f:
                    f.write(content)
        laid.append((mount["mountPath"], local, mount.get("readOnly", False), volume))
    return laid


def localize(env, laid, where):
    """Points every path setting at the file the mount put there; a
    *_FILE setting or HERALD_CONFIG outside every mount is a file the pod
    does not have."""
    out = dict(env)
    for key, value in env.items():
        if not (key.endswith("_FILE") or key == "HERALD_CONFIG") or not value:
            continue
        for mount_path, local, _, _ in sorted(laid, key=lambda m: -len(m[0])):
            if value == mount_path:
                out[key] = local
                break
            if value.startswith(mount_path.rstrip("/") + "/"):
                out[key] = os.path.join(local, value[len(mount_path.rstrip("/")) + 1 :])
                break
        else:
            fail(f"{where}: {key}={value} is not in any volume the container mounts")
        if not os.path.isfile(out[key]):
            fail(f"{where}: {key}={value}: the volume mounted there has no such file")
    return out


def herald_check(herald, args, env, where):
    """`herald check <args>` with exactly `env` as its HERALD_* settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    result = subprocess.run(
        [herald, "check", *args], env={**clean, **env}, capture_output=True, text=True
    )
    if result.returncode != 0 or result.stdout.strip() != "ok":
        fail(f"{where}: herald check {' '.join(args)}: {result.stderr.strip()}")


def setting(root, env, toml_text, name):
    """A setting as the service reads it: env over TOML over the default."""
    if f"HERALD_{name.upper()}" in env:
        return int(env[f"HERALD_{name.upper()}"])
    if toml_text:
        parsed = tomllib.loads(toml_text)
        tables = [parsed] + [t for t in parsed.values() if isinstance(t, dict)]
        for table in tables:
            if name in table and not isinstance(table[name], dict):
                return int(table[name])
    return rust_defaults(root)[name]


def prestop_seconds(container):
    """The pause of the preStop hook: the `sleep` action, or an exec of
    sleep (which needs the binary in the image)."""
    hook = container.get("lifecycle", {}).get("preStop")
    if not hook:
        return 0
    if "sleep" in hook:
        return int(hook["sleep"]["seconds"])
    command = " ".join(hook.get("exec", {}).get("command", []))
    found = re.search(r"\bsleep\s+(\d+)", command)
    return int(found.group(1)) if found else 0


# --- NetworkPolicy evaluation ---------------------------------------------


def selects(selector, labels):
    """Whether a LabelSelector matches `labels` ({} matches everything)."""
    if selector is None:
        return False
    for k, v in selector.get("matchLabels", {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


class Network:
    """Answers "may A open a TCP/UDP connection to B on port P" as the
    overlay's NetworkPolicies say, for one namespace. A peer is
    (namespace labels, pod labels, named ports) — pod labels None for an
    address outside the cluster."""

    def __init__(self, namespace, policies):
        self.ns_labels = {"kubernetes.io/metadata.name": namespace}
        self.policies = list(policies.values())

    def _port_matches(self, rule_ports, port, protocol, named_ports):
        if not rule_ports:
            return True
        for p in rule_ports:
            if p.get("protocol", "TCP") != protocol:
                continue
            want = p.get("port")
            if want is None:
                return True
            if isinstance(want, str):
                want = named_ports.get(want)
            if want is None:
                continue
            if want == port or (p.get("endPort") and want <= port <= p["endPort"]):
                return True
        return False

    def _peer_matches(self, peers, ns_labels, pod_labels):
        if not peers:
            return True
        for peer in peers:
            if "ipBlock" in peer:
                if pod_labels is None:
                    return True
                continue
            if pod_labels is None:
                continue
            if "namespaceSelector" in peer:
                if not selects(peer["namespaceSelector"], ns_labels):
                    continue
            elif ns_labels != self.ns_labels:
                continue
            if "podSelector" in peer and not selects(peer["podSelector"], pod_labels):
                continue
            return True
        return False

    def _allowed(self, direction, own_labels, other_ns, other_pod, port, protocol, named_ports):
        key = "ingress" if direction == "Ingress" else "egress"
        peer_key = "from" if direction == "Ingress" else "to"
        isolating = [
            p for p in self.policies
            if selects(p["spec"]["podSelector"], own_labels)
            and direction in p["spec"].get("policyTypes", ["Ingress"])
        ]
        if not isolating:
            return True
        for policy in isolating:
            for rule in policy["spec"].get(key, []):
                if self._peer_matches(rule.get(peer_key), other_ns, other_pod) and self._port_matches(
                    rule.get("ports"), port, protocol, named_ports
                ):
                    return True
        return False

    def connects(self, src, dst, port, protocol="TCP"):
        """src/dst: (namespace labels, pod labels or None, named ports)."""
        src_ns, src_pod, _ = src
        dst_ns, dst_pod, dst_ports = dst
        if src_ns == self.ns_labels and src_pod is not None:
            if not self._allowed("Egress", src_pod, dst_ns, dst_pod, port, protocol, dst_ports):
                return False
        if dst_ns == self.ns_labels and dst_pod is not None:
            if not self._allowed("Ingress", dst_pod, src_ns, src_pod, port, protocol, dst_ports):
                return False
        return True


def check_network(overlay, namespace, deployments, policies, prod):
    if not policies:
        fail(f"{overlay}: no NetworkPolicies")
    deny = [
        p for p in policies.values()
        if p["spec"]["podSelector"] == {}
        and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress") and not p["spec"].get("egress")
    ]
    if not deny:
        fail(f"{overlay}: no default-deny NetworkPolicy (podSelector {{}}, Ingress and Egress, no rules)")
    net = Network(namespace, policies)
    here = {"kubernetes.io/metadata.name": namespace}

    def pod(name):
        template = deployments[name]["spec"]["template"]
        ports = {
            p["name"]: p["containerPort"]
            for c in template["spec"]["containers"] for p in c.get("ports", []) if "name" in p
        }
        return (here, template["metadata"]["labels"], ports)

    edge, routing, presence, notify = (pod(f"herald-{s}") for s in ("edge", "routing", "presence", "notify"))
    herald = {"edge": edge, "routing": routing, "presence": presence, "notify": notify}
    outside = lambda ns: (ns, {"app": "anything"}, {})  # noqa: E731
    internet = ({}, None, {})
    dns = (KUBE_DNS[0], KUBE_DNS[1], {})
    nats = (NATS_NS, {"app.kubernetes.io/name": "nats"}, {}) if prod else None
    if not prod:
        nats_pod = next((d for n, d in deployments.items() if n == "nats"), None)
        nats = (here, nats_pod["spec"]["template"]["metadata"]["labels"], {}) if nats_pod else internet

    expect = [
        # (what, allowed?, src, dst, port)
        ("clients through the ingress controller reach edges", True, outside(INGRESS_NS), edge, 8080),
        ("the ingress controller cannot reach routing's server API", False, outside(INGRESS_NS), routing, 8081),
        ("an unlabelled namespace cannot reach edges", False, outside(OTHER_NS), edge, 8080),
        ("application servers reach routing's HTTP API", True, outside(APP_NS), routing, 8081),
        ("application servers reach routing's gRPC API", True, outside(APP_NS), routing, 50051),
        ("application servers reach notify's device API", True, outside(APP_NS), notify, 8083),
        ("application servers cannot reach presence", False, outside(APP_NS), presence, 50052),
        ("an unlabelled namespace cannot reach routing", False, outside(OTHER_NS), routing, 8081),
        ("edges ask presence", True, edge, presence, 50052),
        ("routing asks presence", True, routing, presence, 50052),
        ("routing asks notify", True, routing, notify, 50053),
        ("edges cannot call notify", False, edge, notify, 50053),
        ("edges cannot call routing's server API", False, edge, routing, 8081),
        ("presence cannot call notify", False, presence, notify, 50053),
        ("notify reaches PostgreSQL", True, notify, internet, 5432),
        ("edges cannot reach PostgreSQL", False, edge, internet, 5432),
        ("notify reaches APNs/FCM/Web Push", True, notify, internet, 443),
        ("edges cannot reach the Internet", False, edge, internet, 443),
        ("routing cannot reach the Internet", False, routing, internet, 443),
    ]
    for name, p in herald.items():
        expect += [
            (f"{name} resolves names (UDP)", True, p, dns, 53, "UDP"),
            (f"{name} resolves names (TCP)", True, p, dns, 53, "TCP"),
            (f"{name} reaches NATS", True, p, nats, 4222),
            (f"Prometheus scrapes {name}", True, outside(MONITORING_NS), p, p[2]["http"]),
            (f"an unlabelled namespace cannot scrape {name}", False, outside(OTHER_NS), p, p[2]["http"]),
        ]
        if "grpc" in p[2]:
            expect.append((f"Prometheus cannot reach {name}'s gRPC port", False, outside(MONITORING_NS), p, p[2]["grpc"]))
    if prod:
        expect.append(("edges cannot reach a NATS port outside the nats namespace", False, edge, internet, 4222))
    elif "postgres" in deployments:
        postgres = (here, deployments["postgres"]["spec"]["template"]["metadata"]["labels"], {})
        expect.append(("notify reaches the namespace's PostgreSQL", True, notify, postgres, 5432))
    for item in expect:
        what, allowed, src, dst, port = item[:5]
        protocol = item[5] if len(item) > 5 else "TCP"
        if net.connects(src, dst, port, protocol) != allowed:
            fail(f"{overlay}: NetworkPolicies: {what}: {'denied' if allowed else 'allowed'}, want {'allowed' if allowed else 'denied'}")


# --- exposure --------------------------------------------------------------


def edge_routes(root):
    """The paths the edge's router serves (crates/edge/src/lib.rs, fn router)."""
    source = open(os.path.join(root, "crates", "edge", "src", "lib.rs")).read()
    start = source.index("pub fn router(")
    body = source[start : source.index("\n    }\n", start)]
    routes = set(re.findall(r'\.route\(\s*"([^"]+)"', body))
    if not routes:
        fail("no routes found in the edge's router")
    return routes


def path_matches(kind, rule_path, path):
    if kind == "Exact":
        return rule_path == path
    # Prefix, PathPrefix, ImplementationSpecific (read as a prefix): by path
    # element, "/" matching everything
    prefix = rule_path.rstrip("/")
    return path == prefix or path.startswith(prefix + "/") or prefix == ""


def check_exposure(where, rules, client_paths):
    """rules: [(match type, path)]. Every client path reachable, no
    operations path, nothing else."""
    for kind, rule_path in rules:
        if kind not in ("Exact", "Prefix", "PathPrefix", "ImplementationSpecific"):
            fail(f"{where}: path match {kind} {rule_path}: deployment.py cannot tell what it lets through")
        for ops in sorted(OPS_PATHS | NOT_EXPOSED):
            if path_matches(kind, rule_path, ops):
                fail(f"{where}: {kind} {rule_path} routes {ops}, which must stay inside the cluster")
        if rule_path not in client_paths:
            fail(f"{where}: routes {rule_path}, which is not a client endpoint of the edge")
    for path in sorted(client_paths):
        if not any(path_matches(kind, p, path) for kind, p in rules):
            fail(f"{where}: the client endpoint {path} is not routed")


# --- an overlay -------------------------------------------------------------


def check_overlay(kubectl, herald, root, overlay):
    docs = render(kubectl, overlay)
    name_of = os.path.basename(overlay)
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            fail(f"{name_of}: {doc['kind']} {doc['metadata']['name']}: {e.message}")
    prod = name_of == "prod"
    namespaces = {d["metadata"].get("namespace") for d in docs}
    if len(namespaces) != 1 or None in namespaces:
        fail(f"{name_of}: objects in namespaces {namespaces}")
    namespace = namespaces.pop()
    deployments = named(docs, "Deployment")
    configmaps = named(docs, "ConfigMap")
    secrets = named(docs, "Secret")
    services = named(docs, "Service")
    accounts = named(docs, "ServiceAccount")
    hpas = named(docs, "HorizontalPodAutoscaler")

    for cm in configmaps.values():
        leaked = SECRET_SETTINGS & set(cm.get("data", {}))
        if leaked:
            fail(f"{name_of}: ConfigMap {cm['metadata']['name']} holds {sorted(leaked)}: secrets belong in Secrets")

    seen = set()
    budgets = {}
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        where = f"{name_of}: {name}"
        # every pod, Herald's or not
        seccomp = pod.get("securityContext", {}).get("seccompProfile", {}).get("type")
        if seccomp != "RuntimeDefault" and not all(
            c.get("securityContext", {}).get("seccompProfile", {}).get("type") == "RuntimeDefault"
            for c in pod["containers"]
        ):
            fail(f"{where}: no seccompProfile RuntimeDefault")
        if pod.get("automountServiceAccountToken") is not False:
            fail(f"{where}: automountServiceAccountToken is not false (the pod gets an API token)")
        account = pod.get("serviceAccountName")
        if account and account not in accounts:
            fail(f"{where}: ServiceAccount {account} is not in the overlay")

        herald_containers = [c for c in pod["containers"] if "herald" in c["image"].split("/")[-1]]
        if not herald_containers:
            continue
        if not account or accounts[account].get("automountServiceAccountToken") is not False:
            fail(f"{where}: runs under ServiceAccount {account!r}, not its own one with automountServiceAccountToken: false")
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        spread = {c["topologyKey"]: c for c in pod.get("topologySpreadConstraints", [])}
        for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname"):
            if key not in spread:
                fail(f"{where}: no topologySpreadConstraint on {key}")
            if not selects(spread[key].get("labelSelector"), labels):
                fail(f"{where}: the spread on {key} does not count this Deployment's pods")
        if spread["topology.kubernetes.io/zone"]["whenUnsatisfiable"] != "ScheduleAnyway":
            fail(f"{where}: the zone spread must be ScheduleAnyway (a one-zone cluster would not schedule)")

        for container in herald_containers:
            args = container.get("args", [])
            service = args[0] if args else None
            if service not in SERVICES:
                fail(f"{where}: runs `herald {' '.join(args)}`")
            seen.add(service)
            env, from_secrets = container_env(pod, container, configmaps, secrets, services, where)
            leaked = (from_secrets & SECRET_SETTINGS) - SECRETS_OF[service]
            if leaked:
                fail(f"{where}: {service} gets {sorted(leaked)} from its Secrets, which it does not use")
            with tempfile.TemporaryDirectory() as tmp:
                laid = lay_out_mounts(pod, container, configmaps, secrets, tmp, where)
                for mount_path, _, read_only, volume in laid:
                    if "secret" in volume and not read_only:
                        fail(f"{where}: Secret volume {volume['name']} at {mount_path} is not readOnly")
                local_env = localize(env, laid, where)
                toml_text = None
                if "HERALD_CONFIG" in local_env:
                    with open(local_env["HERALD_CONFIG"]) as f:
                        toml_text = f.read()
                herald_check(herald, args, local_env, where)

            ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
            for flag, value in zip(args, args[1:]):
                if flag in ("--http", "--grpc"):
                    port = int(value.rsplit(":", 1)[1])
                    if port not in ports.values():
                        fail(f"{where}: listens on {port} but does not declare it")
            for probe in ("readinessProbe", "livenessProbe"):
                spec = container.get(probe)
                if not spec:
                    fail(f"{where}: no {probe}")
                target = (spec.get("httpGet") or spec.get("grpc"))["port"]
                if target not in ports and target not in ports.values():
                    fail(f"{where}: {probe} on port {target}, not a container port")
            liveness = container["livenessProbe"]
            if liveness.get("httpGet", {}).get("path") != "/healthz":
                fail(f"{where}: liveness must be /healthz (the process is up), not readiness")
            patience = liveness.get("periodSeconds", 10) * liveness.get("failureThreshold", 3)
            if liveness.get("timeoutSeconds", 1) < 3 or patience < 30:
                fail(f"{where}: liveness gives up after {patience} s with a {liveness.get('timeoutSeconds', 1)} s timeout: a busy process would be restarted")
            resources = container.get("resources", {})
            if "cpu" not in resources.get("requests", {}):
                fail(f"{where}: no CPU request (autoscaling needs one)")
            if service == "edge":
                if container["readinessProbe"].get("httpGet", {}).get("path") != "/readyz":
                    fail(f"{where}: edge readiness must be /readyz (unready while draining)")
                request = resources.get("requests", {}).get("memory")
                limit = resources.get("limits", {}).get("memory")
                if not limit or not request or quantity(request) != quantity(limit):
                    fail(f"{where}: edge memory request {request} != limit {limit} (an edge must not be the first evicted)")
                memory_env = next((e for e in container.get("env", []) if e["name"] == "HERALD_MEMORY_LIMIT_MB"), None)
                ref = (memory_env or {}).get("valueFrom", {}).get("resourceFieldRef", {})
                if ref.get("resource") != "limits.memory" or quantity(ref.get("divisor", "1")) != 2**20:
                    fail(f"{where}: HERALD_MEMORY_LIMIT_MB is not the pod's limits.memory in Mi (downward API): the connection budget would not follow the limit")
                budgets[name] = connection_budget(root, env)
                pause = prestop_seconds(container)
                if pause < PRESTOP_MIN_SECS:
                    fail(f"{where}: no preStop pause of at least {PRESTOP_MIN_SECS} s (clients would still be sent to a pod that drains)")
                drain = setting(root, env, toml_text, "drain_window_secs")
                grace = setting(root, env, toml_text, "shutdown_grace_secs")
                need = pause + drain + grace + GRACE_MARGIN_SECS
                period = pod.get("terminationGracePeriodSeconds", 30)
                if period < need:
                    fail(f"{where}: terminationGracePeriodSeconds {period} < preStop {pause} + drain {drain} + grace {grace} + margin {GRACE_MARGIN_SECS}")
    if seen != SERVICES:
        fail(f"{name_of}: services {sorted(seen)}")

    # the internal gRPC URLs name Services of the overlay, on their ports
    config = configmaps["herald-config"]["data"]
    for key, target in (("HERALD_PRESENCE_URL", "herald-presence"), ("HERALD_NOTIFY_URL", "herald-notify")):
        url = config.get(key)
        if not url:
            fail(f"{name_of}: {key} is not set")
        host, port = re.match(r"https?://([^:/]+):(\d+)", url).groups()
        service = services.get(host.split(".")[0])
        if not service or service["spec"]["selector"].get("app.kubernetes.io/name") != target:
            fail(f"{name_of}: {key} {url} does not name the Service of {target}")
        if int(port) not in [p["port"] for p in service["spec"]["ports"]]:
            fail(f"{name_of}: {key} {url}: the Service has no port {port}")
        # the client resolves every address of the name and spreads its
        # calls; through a ClusterIP it would pin one pod
        if service["spec"].get("clusterIP") != "None":
            fail(f"{name_of}: {key} {url} names a ClusterIP Service: gRPC calls would pin one pod (use the headless one)")

    pods = {name: d["spec"]["template"] for name, d in deployments.items()}
    for name, service in services.items():
        selector = service["spec"]["selector"]
        matches = [
            t for t in pods.values()
            if all(t["metadata"]["labels"].get(k) == v for k, v in selector.items())
        ]
        if len(matches) != 1:
            fail(f"{name_of}: Service {name} selects {len(matches)} pod templates")
        ports = {
            p.get("name"): p["containerPort"]
            for c in matches[0]["spec"]["containers"]
            for p in c.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            if target not in ports and target not in ports.values():
                fail(f"{name_of}: Service {name} targets {target}, not a container port")
    for name, hpa in hpas.items():
        target = hpa["spec"]["scaleTargetRef"]
        if target["kind"] != "Deployment" or target["name"] not in deployments:
            fail(f"{name_of}: HPA {name} targets {target}")
        if hpa["spec"]["minReplicas"] > hpa["spec"]["maxReplicas"]:
            fail(f"{name_of}: HPA {name} min > max")
        owned = deployments[target["name"]]
        if "replicas" in owned["spec"]:
            fail(f"{name_of}: {owned['metadata']['name']} sets replicas, which the HPA {name} owns")
    if "herald-edge" not in hpas:
        fail(f"{name_of}: edges do not autoscale")
    for metric in hpas["herald-edge"]["spec"]["metrics"]:
        if metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == "herald_edge_connections":
            target = quantity(metric["pods"]["target"]["averageValue"])
            budget = budgets["herald-edge"]
            if target > budget / 2:
                fail(f"{name_of}: the edge HPA aims at {target:.0f} connections per pod, more than half of the edge's budget {budget} (no room for a drained edge's clients)")
    scale_down = hpas["herald-edge"]["spec"].get("behavior", {}).get("scaleDown", {})
    if scale_down.get("stabilizationWindowSeconds", 300) < 300 or not any(
        p["type"] == "Pods" and p["value"] == 1 for p in scale_down.get("policies", [])
    ):
        fail(f"{name_of}: edges must scale down slowly (each removed edge moves all its clients)")
    if routing := deployments.get("herald-routing"):
        probe = routing["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
        if probe.get("httpGet", {}).get("path") != "/readyz":
            fail(f"{name_of}: routing readiness must be /readyz (503 while NATS is down)")
    for name, pdb in named(docs, "PodDisruptionBudget").items():
        labels = pdb["spec"]["selector"]["matchLabels"]
        if not any(all(t["metadata"]["labels"].get(k) == v for k, v in labels.items()) for t in pods.values()):
            fail(f"{name_of}: PodDisruptionBudget {name} selects nothing")

    check_network(name_of, namespace, deployments, named(docs, "NetworkPolicy"), prod)

    # Secrets referenced anywhere exist or are documented out of band
    referenced = set()
    for deployment in deployments.values():
        pod = deployment["spec"]["template"]["spec"]
        for container in pod["containers"]:
            referenced |= {s["secretRef"]["name"] for s in container.get("envFrom", []) if "secretRef" in s}
            referenced |= {
                e["valueFrom"]["secretKeyRef"]["name"]
                for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})
            }
        referenced |= {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
    for ingress in named(docs, "Ingress").values():
        referenced |= {t["secretName"] for t in ingress["spec"].get("tls", [])}
    missing = sorted(s for s in referenced if s not in secrets and s not in OUT_OF_BAND)
    if missing:
        fail(f"{name_of}: reads Secrets {missing}, neither in the overlay nor documented as created out of band")
    print(f"ok: {name_of}: {len(docs)} objects")
    return docs, sorted(s for s in referenced if s not in secrets)


# --- production ---------------------------------------------------------------


def check_production(kubectl, root, docs, out_of_band):
    """A 3-node NATS cluster named by the seed list, R3 streams, NATS
    credentials and CA mounted read-only; edges scale on connections and
    notify on its queue through metrics the monitoring files serve; the
    Ingress and the HTTPRoute expose the client endpoints only; every
    out-of-band Secret documented and made by the External Secrets
    example."""
    configmaps = named(docs, "ConfigMap")
    config = configmaps["herald-config"]["data"]
    seeds = config["HERALD_NATS_URL"].split(",")
    if len(seeds) < 3:
        fail(f"prod: HERALD_NATS_URL names {len(seeds)} NATS servers, not a cluster")
    for setting_name in ("HERALD_HISTORY_REPLICAS", "HERALD_QUEUE_REPLICAS"):
        if config.get(setting_name) != "3":
            fail(f"prod: {setting_name} is {config.get(setting_name)!r}, not 3")

    # the cluster k8s/nats/values.yaml makes is the one the seeds name
    with open(os.path.join(root, "k8s", "nats", "values.yaml")) as f:
        nats = yaml.safe_load(f)
    cfg = nats.get("config", {})
    cluster = cfg.get("cluster", {})
    if not cluster.get("enabled") or cluster.get("replicas", 0) < 3:
        fail("k8s/nats/values.yaml: not a cluster of 3 or more servers")
    js = cfg.get("jetstream", {})
    store = js.get("fileStore", {})
    if not js.get("enabled") or not store.get("enabled") or not store.get("pvc", {}).get("enabled"):
        fail("k8s/nats/values.yaml: JetStream without file storage on a PersistentVolumeClaim")
    if not js.get("memoryStore", {}).get("enabled"):
        fail("k8s/nats/values.yaml: no JetStream memory store (the presence lease stream is a memory stream)")
    if not cfg.get("nats", {}).get("tls", {}).get("enabled"):
        fail("k8s/nats/values.yaml: clients do not connect over TLS")
    if not cfg.get("resolver", {}).get("enabled"):
        fail("k8s/nats/values.yaml: no account resolver (the .creds files need operator mode)")
    full, ns = nats.get("fullnameOverride"), nats.get("namespaceOverride")
    want = [f"tls://{full}-{i}.{full}-headless.{ns}.svc:4222" for i in range(cluster["replicas"])]
    if seeds != want:
        fail(f"prod: HERALD_NATS_URL {seeds} is not the cluster of k8s/nats/values.yaml {want}")

    # every service authenticates and checks the servers' certificates
    deployments = named(docs, "Deployment")
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        for container in pod["containers"]:
            if "herald" not in container["image"].split("/")[-1]:
                continue
            env = dict(config)
            env.update({e["name"]: e.get("value") for e in container.get("env", [])})
            mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            for key in ("HERALD_NATS_CREDS_FILE", "HERALD_NATS_TLS_CA_FILE"):
                path = env.get(key)
                if not path:
                    fail(f"prod: {name}: no {key}")
                mount = next((m for p, m in mounts.items() if path.startswith(p.rstrip("/") + "/")), None)
                if not mount or "secret" not in volumes[mount["name"]] or not mount.get("readOnly"):
                    fail(f"prod: {name}: {key} {path} is not in a read-only Secret mount")

    # autoscaling metrics: served by the adapter, exported by the services
    exported = exported_metrics(root)
    with open(os.path.join(root, "k8s", "monitoring", "prometheus-adapter.yaml")) as f:
        adapter = yaml.safe_load(f)["rules"]
    served = {
        "Pods": {r["name"]["as"] for r in adapter.get("custom", [])},
        "External": {r["name"]["as"] for r in adapter.get("external", [])},
    }
    for kind in ("custom", "external"):
        for rule in adapter.get(kind, []):
            check_exported(metrics_in(rule["seriesQuery"]), exported, f"the adapter's {kind} rule {rule['name']['as']}")
    hpas = named(docs, "HorizontalPodAutoscaler")
    for name, hpa in hpas.items():
        for metric in hpa["spec"]["metrics"]:
            kind = metric["type"]
            if kind in served:
                wanted = metric[kind.lower()]["metric"]["name"]
                if wanted not in served[kind]:
                    fail(f"prod: the HPA {name} wants the {kind} metric {wanted}; the adapter serves {sorted(served[kind])}")
    edge = {m["type"]: m for m in hpas["herald-edge"]["spec"]["metrics"]}
    if "Resource" not in edge or edge.get("Pods", {}).get("pods", {}).get("metric", {}).get("name") != "herald_edge_connections":
        fail(f"prod: the edge HPA scales on {sorted(edge)}, not CPU and connections per pod")
    notify = {m["type"]: m for m in hpas.get("herald-notify", {"spec": {"metrics": []}})["spec"]["metrics"]}
    queue = notify.get("External", {}).get("external", {}).get("metric", {}).get("name")
    if queue != "herald_notify_queue_pending" or notify["External"]["external"]["target"]["type"] != "AverageValue":
        fail("prod: notify does not scale on herald_notify_queue_pending per pod (External, AverageValue)")

    # exposure: the client endpoints only
    client_paths = edge_routes(root) - OPS_PATHS - NOT_EXPOSED
    services = named(docs, "Service")
    ingresses = named(docs, "Ingress")
    if not ingresses:
        fail("prod: no Ingress")
    for name, ingress in ingresses.items():
        rules = []
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                if backend["name"] != "herald-edge":
                    fail(f"prod: Ingress {name} sends {path['path']} to {backend['name']}, not the edges")
                rules.append((path["pathType"], path["path"]))
        check_exposure(f"prod: Ingress {name}", rules, client_paths)
    with open(os.path.join(root, "k8s", "examples", "gateway-httproute.yaml")) as f:
        routes = [d for d in yaml.safe_load_all(f) if d and d["kind"] == "HTTPRoute"]
    if not routes:
        fail("k8s/examples/gateway-httproute.yaml: no HTTPRoute")
    edge_ports = [p["port"] for p in services["herald-edge"]["spec"]["ports"]]
    for route in routes:
        rules = []
        for rule in route["spec"]["rules"]:
            for backend in rule.get("backendRefs", []):
                if backend["name"] != "herald-edge" or backend.get("port") not in edge_ports:
                    fail(f"HTTPRoute {route['metadata']['name']}: backend {backend} is not the edge Service")
            for match in rule.get("matches", [{"path": {"type": "PathPrefix", "value": "/"}}]):
                path = match.get("path", {"type": "PathPrefix", "value": "/"})
                rules.append((path.get("type", "PathPrefix"), path["value"]))
        check_exposure(f"HTTPRoute {route['metadata']['name']}", rules, client_paths)

    # out-of-band Secrets: documented, and made by the External Secrets example
    with open(os.path.join(root, "docs", "OPERATIONS.md")) as f:
        ops = f.read()
    if "## Kubernetes" not in ops:
        fail("docs/OPERATIONS.md has no Kubernetes section")
    kubernetes_doc = ops[ops.index("## Kubernetes"):]
    with open(os.path.join(root, "k8s", "examples", "external-secrets.yaml")) as f:
        external = {
            d["spec"]["target"]["name"]: d for d in yaml.safe_load_all(f) if d and d["kind"] == "ExternalSecret"
        }
    for name in out_of_band:
        if f"`{name}`" not in kubernetes_doc:
            fail(f"prod: Secret {name} is created out of band but docs/OPERATIONS.md (Kubernetes) does not say how")
        if name in NOT_FROM_EXTERNAL_SECRETS:
            continue
        if name not in external:
            fail(f"k8s/examples/external-secrets.yaml does not make {name}")
        spec = external[name]["spec"]
        template = spec["target"].get("template", {}).get("data")
        keys = set(template) if template else {d["secretKey"] for d in spec.get("data", [])}
        if keys != set(OUT_OF_BAND[name]):
            fail(f"k8s/examples/external-secrets.yaml: {name} has keys {sorted(keys)}, the services read {sorted(OUT_OF_BAND[name])}")
    print("ok: prod: R3 on the NATS cluster of k8s/nats, credentials mounted, scaling metrics served, client endpoints only, secrets documented")


# --- monitoring ---------------------------------------------------------------


ALERTS = {
    # alert: metrics its expression must read
    "HeraldEdgeNearConnectionBudget": {"herald_edge_connections", "herald_edge_connection_budget"},
    "HeraldPublishErrors": {"herald_routing_errors_total"},
    "HeraldPushDeadLetters": {"herald_notify_dead_letters_total"},
    "HeraldNatsDisconnected": {"herald_nats_connected"},
}
DASHBOARD_METRICS = {
    "herald_edge_connections", "herald_edge_connection_budget", "herald_routing_errors_total",
    "herald_notify_queue_pending", "herald_notify_dead_letters_total", "herald_nats_connected",
}


def check_monitoring(kubectl, root):
    """k8s/monitoring renders; its core objects are valid; the alerts and
    the dashboard read metrics the services export."""
    path = os.path.join(root, "k8s", "monitoring")
    docs = render(kubectl, path)
    exported = exported_metrics(root)
    # CRDs of Prometheus Operator: no schema here, checked by what they say
    crds = {"PodMonitor", "PrometheusRule"}
    for doc in docs:
        if doc["kind"] in crds:
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            fail(f"monitoring: {doc['kind']} {doc['metadata']['name']}: {e.message}")
    monitors = named(docs, "PodMonitor")
    if not monitors:
        fail("monitoring: no PodMonitor")
    for monitor in monitors.values():
        scraped = set()
        for expr in monitor["spec"]["selector"].get("matchExpressions", []):
            scraped |= set(expr.get("values", []))
        scraped |= set(monitor["spec"]["selector"].get("matchLabels", {}).values())
        if not {f"herald-{s}" for s in SERVICES} <= scraped:
            fail(f"monitoring: PodMonitor {monitor['metadata']['name']} scrapes {sorted(scraped)}")
        if [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] != ["http"]:
            fail("monitoring: the PodMonitor must scrape the port named http (every service's metrics port)")

    rules = {}
    for rule_doc in named(docs, "PrometheusRule").values():
        for group in rule_doc["spec"]["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    rules[rule["alert"]] = rule
                check_exported(metrics_in(rule["expr"]), exported, f"monitoring: rule {rule.get('alert') or rule.get('record')}")
    for alert, metrics in ALERTS.items():
        if alert not in rules:
            fail(f"monitoring: no alert {alert}")
        if not metrics <= metrics_in(rules[alert]["expr"]):
            fail(f"monitoring: alert {alert} does not read {sorted(metrics - metrics_in(rules[alert]['expr']))}")
    if "0.85" not in rules["HeraldEdgeNearConnectionBudget"]["expr"]:
        fail("monitoring: HeraldEdgeNearConnectionBudget must fire at 85 % of the budget")
    if rules["HeraldNatsDisconnected"].get("for") != "1m" or "== 0" not in rules["HeraldNatsDisconnected"]["expr"]:
        fail("monitoring: HeraldNatsDisconnected must fire after a minute at 0")

    with open(os.path.join(path, "grafana-dashboard.json")) as f:
        text = f.read()
    dashboard = json.loads(text)
    boards = [
        cm for cm in named(docs, "ConfigMap").values()
        if cm["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
    ]
    if len(boards) != 1 or list(boards[0]["data"].values()) != [text]:
        fail("monitoring: the dashboard is not one ConfigMap labelled grafana_dashboard=1 holding grafana-dashboard.json")
    seen = set()
    for panel in dashboard["panels"]:
        if not panel.get("targets"):
            fail(f"monitoring: dashboard panel {panel['title']!r} has no query")
        for target in panel["targets"]:
            names = metrics_in(target["expr"])
            check_exported(names, exported, f"monitoring: dashboard panel {panel['title']!r}")
            seen |= names
    if not DASHBOARD_METRICS <= seen:
        fail(f"monitoring: the dashboard shows nothing of {sorted(DASHBOARD_METRICS - seen)}")
    print(f"ok: monitoring: {len(rules)} alerts, {len(dashboard['panels'])} panels, on exported metrics")


# --- compose ------------------------------------------------------------------


def check_compose(herald, path):
    with open(path) as f:
        compose = yaml.safe_load(f)
    services = compose["services"]
    seen = set()
    for name, service in services.items():
        for dependency in service.get("depends_on", []):
            if dependency not in services:
                fail(f"compose: {name} depends on unknown {dependency}")
        if not str(service.get("image", "")).startswith("herald"):
            continue
        args = service["command"]
        if args[0] not in SERVICES:
            fail(f"compose: {name} runs `herald {' '.join(args)}`")
        seen.add(args[0])
        env = {k: str(v) for k, v in service.get("environment", {}).items()}
        herald_check(herald, args, env, f"compose: {name}")
    if seen != SERVICES:
        fail(f"compose: services {sorted(seen)}")
    # every file a service mounts is in the repository
    base = os.path.dirname(path)
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith(".") and not os.path.exists(os.path.join(base, source)):
                fail(f"compose: {name} mounts {source}, which does not exist")
    # Prometheus scrapes each Herald service where it listens
    with open(os.path.join(base, "prometheus.yml")) as f:
        prometheus = yaml.safe_load(f)
    scraped = set()
    for job in prometheus["scrape_configs"]:
        for static in job.get("static_configs", []):
            scraped.update(static["targets"])
            if static.get("labels", {}).get("namespace") is None:
                fail(f"prometheus.yml: {static['targets']} without the namespace label the dashboard selects on")
        for dns in job.get("dns_sd_configs", []):
            scraped.update(f"{n}:{dns['port']}" for n in dns["names"])
    for name, service in services.items():
        if not str(service.get("image", "")).startswith("herald"):
            continue
        args = service["command"]
        port = args[args.index("--http") + 1].rsplit(":", 1)[1]
        if f"{name}:{port}" not in scraped:
            fail(f"prometheus.yml does not scrape {name}:{port} (scrapes {sorted(scraped)})")
    print(f"ok: compose: {len(services)} services, each scraped by prometheus.yml")


def main():
    kubectl, herald, root = sys.argv[1:4]
    check_overlay(kubectl, herald, root, os.path.join(root, "k8s", "overlays", "dev"))
    docs, out_of_band = check_overlay(kubectl, herald, root, os.path.join(root, "k8s", "overlays", "prod"))
    check_production(kubectl, root, docs, out_of_band)
    check_monitoring(kubectl, root)
    check_compose(herald, os.path.join(root, "deploy", "docker-compose.yml"))
    print("ok: deployment")


if __name__ == "__main__":
    main()
