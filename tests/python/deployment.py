"""The deployment files agree with the binary they run.

Kubernetes: each overlay, rendered by kustomize, holds valid Kubernetes
objects (checked against the API's schemas); every Herald container's
command, flags and environment pass `herald check <service>`; probes and
Services point at ports the containers listen on; every autoscaler targets
a Deployment that requests CPU; edges get the time to drain.

docker compose: every Herald service's command and environment pass
`herald check`, and everything it depends on is a service of the file.

usage: python deployment.py KUBECTL HERALD_BIN REPO_ROOT
"""

import base64
import os
import subprocess
import sys
import tempfile

import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.30.0"
SERVICES = {"edge", "routing", "presence", "notify"}


def render(kubectl, overlay):
    out = subprocess.run(
        [kubectl, "kustomize", overlay], check=True, capture_output=True, text=True
    )
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def named(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def fail(message):
    raise SystemExit(f"FAIL: {message}")


def container_env(container, configmaps, secrets, placeholders):
    """The environment Kubernetes would give the container."""
    env = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(configmaps[source["configMapRef"]["name"]]["data"])
        if "secretRef" in source:
            name = source["secretRef"]["name"]
            if name in secrets:
                data = secrets[name].get("data", {})
                env.update({k: base64.b64decode(v).decode() for k, v in data.items()})
            else:
                # created out of band (prod): the documented keys
                env.update(placeholders)
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "fieldRef" in item.get("valueFrom", {}):
            env[item["name"]] = "pod-0"
    return env


def herald_check(herald, args, env, where):
    """`herald check <args>` with exactly `env` as its HERALD_* settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    result = subprocess.run(
        [herald, "check", *args], env={**clean, **env}, capture_output=True, text=True
    )
    if result.returncode != 0 or result.stdout.strip() != "ok":
        fail(f"{where}: herald check {' '.join(args)}: {result.stderr.strip()}")


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
    print(f"ok: compose: {len(services)} services")


def check_overlay(kubectl, herald, overlay):
    docs = render(kubectl, overlay)
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            fail(f"{overlay}: {doc['kind']} {doc['metadata']['name']}: {e.message}")
    deployments = named(docs, "Deployment")
    configmaps = named(docs, "ConfigMap")
    secrets = named(docs, "Secret")
    placeholders = {
        "HERALD_JWT_SECRET": "a-production-secret-0123456789abcdef",
        "HERALD_API_KEYS": "a-production-api-key",
        "HERALD_DATABASE_URL": "postgres://herald@db/herald",
    }

    seen = set()
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        for container in pod["containers"]:
            image = container["image"]
            if "herald" not in image.split("/")[-1]:
                continue
            args = container.get("args", [])
            service = args[0] if args else None
            if service not in SERVICES:
                fail(f"{name}: runs `herald {' '.join(args)}`")
            seen.add(service)
            env = container_env(container, configmaps, secrets, placeholders)
            # mounted files: the TOML from its ConfigMap
            with tempfile.TemporaryDirectory() as tmp:
                mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
                volumes = {v["name"]: v for v in pod.get("volumes", [])}
                if "HERALD_CONFIG" in env:
                    mount = mounts.get(env["HERALD_CONFIG"])
                    if not mount:
                        fail(f"{name}: HERALD_CONFIG {env['HERALD_CONFIG']} is not mounted")
                    source = configmaps[volumes[mount["name"]]["configMap"]["name"]]
                    path = os.path.join(tmp, "herald.toml")
                    with open(path, "w") as f:
                        f.write(source["data"][mount["subPath"]])
                    env["HERALD_CONFIG"] = path
                herald_check(herald, args, env, f"{overlay}: {name}")

            ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
            for flag, value in zip(args, args[1:]):
                if flag in ("--http", "--grpc"):
                    port = int(value.rsplit(":", 1)[1])
                    if port not in ports.values():
                        fail(f"{name}: listens on {port} but does not declare it")
            for probe in ("readinessProbe", "livenessProbe"):
                spec = container.get(probe)
                if not spec:
                    fail(f"{name}: no {probe}")
                target = (spec.get("httpGet") or spec.get("grpc"))["port"]
                if target not in ports and target not in ports.values():
                    fail(f"{name}: {probe} on port {target}, not a container port")
            if "cpu" not in container.get("resources", {}).get("requests", {}):
                fail(f"{name}: no CPU request (autoscaling needs one)")
            if service == "edge":
                if container["readinessProbe"]["httpGet"]["path"] != "/readyz":
                    fail("edge readiness must be /readyz (unready while draining)")
                drain = int(env["HERALD_DRAIN_WINDOW_SECS"]) + int(env["HERALD_SHUTDOWN_GRACE_SECS"])
                grace = pod.get("terminationGracePeriodSeconds", 30)
                if grace <= drain:
                    fail(f"edge: terminationGracePeriodSeconds {grace} <= drain {drain}")
    if seen != SERVICES:
        fail(f"{overlay}: services {sorted(seen)}")

    pods = {
        name: d["spec"]["template"]
        for name, d in deployments.items()
    }
    for name, service in named(docs, "Service").items():
        selector = service["spec"]["selector"]
        matches = [
            t for t in pods.values()
            if all(t["metadata"]["labels"].get(k) == v for k, v in selector.items())
        ]
        if len(matches) != 1:
            fail(f"{overlay}: Service {name} selects {len(matches)} pod templates")
        ports = {
            p.get("name"): p["containerPort"]
            for c in matches[0]["spec"]["containers"]
            for p in c.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            if target not in ports and target not in ports.values():
                fail(f"{overlay}: Service {name} targets {target}, not a container port")
    for name, hpa in named(docs, "HorizontalPodAutoscaler").items():
        target = hpa["spec"]["scaleTargetRef"]
        if target["kind"] != "Deployment" or target["name"] not in deployments:
            fail(f"{overlay}: HPA {name} targets {target}")
        if hpa["spec"]["minReplicas"] > hpa["spec"]["maxReplicas"]:
            fail(f"{overlay}: HPA {name} min > max")
    if "herald-edge" not in named(docs, "HorizontalPodAutoscaler"):
        fail(f"{overlay}: edges do not autoscale")
    for name in named(docs, "HorizontalPodAutoscaler"):
        owned = deployments[named(docs, "HorizontalPodAutoscaler")[name]["spec"]["scaleTargetRef"]["name"]]
        if "replicas" in owned["spec"]:
            fail(f"{overlay}: {owned['metadata']['name']} sets replicas, which the HPA {name} owns")
    if routing := deployments.get("herald-routing"):
        probe = routing["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
        if probe.get("httpGet", {}).get("path") != "/readyz":
            fail(f"{overlay}: routing readiness must be /readyz (503 while NATS is down)")
    for name, pdb in named(docs, "PodDisruptionBudget").items():
        labels = pdb["spec"]["selector"]["matchLabels"]
        if not any(all(t["metadata"]["labels"].get(k) == v for k, v in labels.items()) for t in pods.values()):
            fail(f"{overlay}: PodDisruptionBudget {name} selects nothing")
    print(f"ok: {os.path.basename(overlay)}: {len(docs)} objects")


def check_production(kubectl, root):
    """The prod overlay keeps three copies of every stream on a NATS cluster
    given as a seed list, and scales edges on connections per pod through a
    metric the monitoring files make."""
    docs = render(kubectl, os.path.join(root, "k8s", "overlays", "prod"))
    config = named(docs, "ConfigMap")["herald-config"]["data"]
    seeds = config["HERALD_NATS_URL"].split(",")
    if len(seeds) < 3:
        fail(f"prod: HERALD_NATS_URL names {len(seeds)} NATS servers, not a cluster")
    for setting in ("HERALD_HISTORY_REPLICAS", "HERALD_QUEUE_REPLICAS"):
        if config.get(setting) != "3":
            fail(f"prod: {setting} is {config.get(setting)!r}, not 3")
    hpa = named(docs, "HorizontalPodAutoscaler")["herald-edge"]
    kinds = {m["type"]: m for m in hpa["spec"]["metrics"]}
    if "Resource" not in kinds or "Pods" not in kinds:
        fail(f"prod: the edge HPA scales on {sorted(kinds)}, not CPU and connections")
    metric = kinds["Pods"]["pods"]["metric"]["name"]
    with open(os.path.join(root, "k8s", "monitoring", "prometheus-adapter.yaml")) as f:
        adapter = yaml.safe_load(f)
    served = {r["name"]["as"] for r in adapter["rules"]["custom"]}
    if metric not in served:
        fail(f"prod: the edge HPA wants {metric}; the adapter serves {sorted(served)}")
    series = {r["seriesQuery"].split("{")[0] for r in adapter["rules"]["custom"]}
    source = open(os.path.join(root, "crates", "edge", "src", "stats.rs")).read()
    for s in series:
        if f'gauge!("{s}")' not in source:
            fail(f"the adapter reads {s}, which the edge does not export")
    print("ok: prod: R3 streams on a seed list, edges scale on connections")


def main():
    kubectl, herald, root = sys.argv[1:4]
    for overlay in ("dev", "prod"):
        check_overlay(kubectl, herald, os.path.join(root, "k8s", "overlays", overlay))
    check_production(kubectl, root)
    check_compose(herald, os.path.join(root, "deploy", "docker-compose.yml"))
    print("ok: deployment")


if __name__ == "__main__":
    main()
