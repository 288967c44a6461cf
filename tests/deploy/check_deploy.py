"""Offline checks of deploy/: yamllint, a schema check of every Kubernetes object against the
API models of Debian's python3-kubernetes (generated from Kubernetes' OpenAPI spec: an
unknown or misspelt field, a wrong nesting or a missing required field is an error), then a
structural check of the Kubernetes manifests
and the compose file (kinds and API versions, selectors that match, volumes, secrets and
claims that exist, GPU requests, probes), and every command-line flag they pass checked
against the built i2s_server and i2s_client (`--help`), so a renamed flag cannot leave the
manifests behind.

Run: check_deploy.py --deploy deploy --server build/server/i2s_server
                     --client build/client/i2s_client
"""

import argparse
import glob
import os
import re
import subprocess
import sys

import yaml

API_VERSIONS = {"Deployment": "apps/v1", "Service": "v1", "PodDisruptionBudget": "policy/v1",
                "PersistentVolumeClaim": "v1", "Secret": "v1",
                "NetworkPolicy": "networking.k8s.io/v1"}
errors = []


def fail(where, what):
    errors.append(f"{where}: {what}")


def flags_of(binary):
    """Every --flag the binary's --help lists (subcommands' too for the client)."""
    out = subprocess.run([binary, "--help-all" if "client" in binary else "--help"],
                         capture_output=True, text=True, timeout=60).stdout
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", out))


def check_args(where, args, known, binary):
    for a in args:
        if not isinstance(a, str) or not a.startswith("--"):
            continue
        flag = a.split("=", 1)[0]
        if flag not in known:
            fail(where, f"{flag} is not a flag of {os.path.basename(binary)}")


MODELS = {"Deployment": "V1Deployment", "Service": "V1Service",
          "PodDisruptionBudget": "V1PodDisruptionBudget",
          "PersistentVolumeClaim": "V1PersistentVolumeClaim", "Secret": "V1Secret",
          "NetworkPolicy": "V1NetworkPolicy"}


def unknown_fields(original, parsed, where):
    """Keys of `original` that the model did not keep (it drops fields it does not know)."""
    out = []
    if isinstance(original, dict):
        parsed = parsed if isinstance(parsed, dict) else {}
        for k, v in original.items():
            if k not in parsed:
                out.append(f"{where}.{k}".lstrip("."))
            else:
                out += unknown_fields(v, parsed[k], f"{where}.{k}")
    elif isinstance(original, list):
        parsed = parsed if isinstance(parsed, list) else []
        for i, v in enumerate(original):
            out += unknown_fields(v, parsed[i] if i < len(parsed) else None, f"{where}[{i}]")
    return out


def check_schema(docs):
    """Each object through its python3-kubernetes model and back: what does not survive the
    round trip is not part of the API."""
    from kubernetes import client
    api = client.ApiClient()
    for path, doc in docs:
        kind = doc.get("kind")
        where = f"{path} {kind}/{doc.get('metadata', {}).get('name')}"
        if kind not in MODELS:
            continue  # reported by check_kubernetes
        try:
            # The client's own response decoder (a private method, the only public way is
            # from an HTTP response).
            model = api._ApiClient__deserialize(doc, MODELS[kind])
        except (ValueError, TypeError) as e:  # a required field missing, a wrong type
            fail(where, f"not a valid {MODELS[kind]}: {e}")
            continue
        back = api.sanitize_for_serialization(model)
        for field in unknown_fields(doc, back, ""):
            fail(where, f"{field}: not a field of the Kubernetes API ({MODELS[kind]})")


def check_kubernetes(docs, server_flags, client_flags, args):
    by_kind = {}
    for path, doc in docs:
        where = f"{path} {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        kind = doc.get("kind")
        if kind not in API_VERSIONS:
            fail(where, f"unexpected kind {kind!r}")
            continue
        if doc.get("apiVersion") != API_VERSIONS[kind]:
            fail(where, f"apiVersion {doc.get('apiVersion')!r}, want {API_VERSIONS[kind]!r}")
        if not doc.get("metadata", {}).get("name"):
            fail(where, "metadata.name missing")
        by_kind.setdefault(kind, {})[doc["metadata"]["name"]] = (where, doc)

    claims = set(by_kind.get("PersistentVolumeClaim", {}))
    secrets = set(by_kind.get("Secret", {}))
    pod_labels = []
    for name, (where, d) in by_kind.get("Deployment", {}).items():
        spec = d["spec"]
        labels = spec["template"]["metadata"].get("labels", {})
        pod_labels.append(labels)
        for k, v in spec["selector"]["matchLabels"].items():
            if labels.get(k) != v:
                fail(where, f"selector {k}={v} does not match the pod template's labels")
        pod = spec["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for v in volumes.values():
            if "persistentVolumeClaim" in v and v["persistentVolumeClaim"]["claimName"] not in claims:
                fail(where, f"volume {v['name']}: no PersistentVolumeClaim "
                            f"{v['persistentVolumeClaim']['claimName']!r} in deploy/k8s")
            if "secret" in v and v["secret"]["secretName"] not in secrets:
                fail(where, f"volume {v['name']}: no Secret {v['secret']['secretName']!r} "
                            "(secrets.example.yaml shows each one)")
        grace = pod.get("terminationGracePeriodSeconds", 30)
        for c in pod["containers"]:
            cw = f"{where} container {c['name']}"
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                if "nvidia.com/gpu" not in res.get(part, {}):
                    fail(cw, f"resources.{part} has no nvidia.com/gpu")
            if "cpu" not in res.get("requests", {}) or "memory" not in res.get("requests", {}):
                fail(cw, "resources.requests needs cpu and memory")
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                p = c.get(probe)
                if p is None:
                    fail(cw, f"no {probe}")
                    continue
                command = p.get("exec", {}).get("command")
                if command is not None:
                    if command[0] != "i2s_client" or command[-1] != "health":
                        fail(cw, f"{probe} should run i2s_client ... health")
                    check_args(f"{cw} {probe}", command[1:], client_flags, args.client)
                elif "grpc" not in p:
                    fail(cw, f"{probe} is neither a gRPC health check nor i2s_client health")
            for m in c.get("volumeMounts", []):
                if m["name"] not in volumes:
                    fail(cw, f"volumeMount {m['name']!r} has no volume")
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref is None:
                    continue
                if ref["name"] not in secrets:
                    fail(cw, f"env {e['name']}: no Secret {ref['name']!r} (secrets.example.yaml)")
                    continue
                secret = by_kind["Secret"][ref["name"]][1]
                keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
                if ref["key"] not in keys:
                    fail(cw, f"env {e['name']}: Secret {ref['name']!r} has no key {ref['key']!r}")
            env_names = {e["name"] for e in c.get("env", [])}
            replicas = d["spec"].get("replicas", 1)
            if replicas > 1 and "I2S_STORE" not in env_names and not any(
                    a.startswith("--store=") for a in c.get("args", [])):
                fail(cw, f"{replicas} replicas need a shared store (--store or I2S_STORE): "
                         "SQLite belongs to one server")
            check_args(cw, c.get("args", []), server_flags, args.server)
            server_args = dict(a.split("=", 1) for a in c.get("args", []) if "=" in a)
            shutdown = float(server_args.get("--shutdown-grace", 20))
            if grace <= shutdown:
                fail(cw, f"terminationGracePeriodSeconds {grace} must exceed --shutdown-grace "
                         f"{shutdown} (jobs checkpoint on SIGTERM)")
            if "--local-address" in server_args and not server_args["--local-address"].startswith(
                    "127."):
                fail(cw, "--local-address must be loopback")
            ports = {p.get("name") for p in c.get("ports", [])}
            for svc_where, svc in by_kind.get("Service", {}).values():
                for p in svc["spec"]["ports"]:
                    if isinstance(p["targetPort"], str) and p["targetPort"] not in ports:
                        fail(svc_where, f"targetPort {p['targetPort']!r} is no container port")
    # The metrics port is plain HTTP: a NetworkPolicy must admit it only from chosen peers,
    # and the server must ask scrapes for a token.
    policies = by_kind.get("NetworkPolicy", {})
    if not policies:
        fail("deploy/k8s", "no NetworkPolicy restricting the metrics port")
    for where, d in policies.values():
        for rule in d["spec"].get("ingress", []):
            ports = {p.get("port") for p in rule.get("ports", [])}
            if ("metrics" in ports or 9464 in ports) and not rule.get("from"):
                fail(where, "the metrics port is open to every peer (give the rule a `from`)")
            if not rule.get("ports"):
                fail(where, "an ingress rule without ports admits every port")
    for _, d in by_kind.get("Deployment", {}).values():
        for c in d["spec"]["template"]["spec"]["containers"]:
            argv = c.get("args", [])
            if any(a.startswith("--metrics-address") for a in argv) and not any(
                    a.startswith("--metrics-token-file") for a in argv):
                fail(f"Deployment container {c['name']}", "--metrics-address without "
                     "--metrics-token-file: anyone who reaches the port may scrape")
    for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
        for where, d in by_kind.get(kind, {}).values():
            sel = d["spec"]["podSelector" if kind == "NetworkPolicy" else "selector"]
            sel = sel.get("matchLabels", sel)
            if not any(all(l.get(k) == v for k, v in sel.items()) for l in pod_labels):
                fail(where, f"selector {sel} matches no Deployment's pods")
    if not by_kind.get("Deployment"):
        fail("deploy/k8s", "no Deployment")


def check_compose(path, server_flags, client_flags, args):
    with open(path) as f:
        c = yaml.safe_load(f)
    svc = c["services"]["i2s"]
    check_args(f"{path} command", svc["command"], server_flags, args.server)
    devices = svc["deploy"]["resources"]["reservations"]["devices"]
    if not any("gpu" in d.get("capabilities", []) and d.get("driver") == "nvidia"
               for d in devices):
        fail(path, "no NVIDIA GPU reservation")
    for v in svc.get("volumes", []):
        source = v.split(":", 1)[0]
        if not source.startswith(("/", ".", "$")) and source not in c.get("volumes", {}):
            fail(path, f"volume {source!r} is not declared")
    for s in svc.get("secrets", []):
        if s not in c.get("secrets", {}):
            fail(path, f"secret {s!r} is not declared")
    test = svc["healthcheck"]["test"]
    check_args(f"{path} healthcheck", test[2:], client_flags, args.client)


def check_dockerfile(path, server_flags, client_flags, args):
    """The runtime stage's packages exist in the archive, and the flags of its
    ENTRYPOINT/CMD/HEALTHCHECK are real."""
    with open(path) as f:
        text = f.read().replace("\\\n", " ")
    stages = re.split(r"^FROM ", text, flags=re.M)
    runtime = stages[-1]
    m = re.search(r"apt-get install[^&]*", runtime)
    packages = [w for w in m.group(0).split()[2:] if not w.startswith("-")] if m else []
    if not packages:
        fail(path, "no apt-get install in the runtime stage")
    # The image is Debian 12's; another release (the Debian 13 test run) has other names.
    with open("/etc/os-release") as f:
        bookworm = "VERSION_CODENAME=bookworm" in f.read()
    if not bookworm:
        print("not Debian 12: the Dockerfile's runtime packages are not checked here")
    for p in packages if bookworm else []:
        if subprocess.run(["apt-cache", "show", p], capture_output=True).returncode != 0:
            fail(path, f"runtime package {p} is not in the archive")
    import json
    for key, known, binary in (("ENTRYPOINT", server_flags, args.server),
                               ("CMD", server_flags, args.server),
                               ("HEALTHCHECK", client_flags, args.client)):
        line = re.search(rf"^{key} .*$", runtime, flags=re.M)
        if line is None:
            fail(path, f"no {key}")
            continue
        words = json.loads(line.group(0)[line.group(0).index("["):])
        check_args(f"{path} {key}", words, known, binary)
    if not re.search(r"^USER (?!root|0)", runtime, flags=re.M):
        fail(path, "the runtime stage must run as a non-root USER")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--deploy", required=True)
    p.add_argument("--server", required=True)
    p.add_argument("--client", required=True)
    args = p.parse_args()
    lint = subprocess.run(["yamllint", "-c", os.path.join(args.deploy, ".yamllint"), "--strict",
                           args.deploy], capture_output=True, text=True)
    if lint.returncode != 0:
        fail("yamllint", lint.stdout + lint.stderr)
    server_flags, client_flags = flags_of(args.server), flags_of(args.client)
    if "--auth-tokens" not in server_flags or "--server" not in client_flags:
        fail("--help", "could not read the flags of the binaries")
    docs = []
    paths = sorted(glob.glob(os.path.join(args.deploy, "k8s", "*.yaml")))
    for path in paths:
        with open(path) as f:
            docs += [(path, d) for d in yaml.safe_load_all(f) if d is not None]
    check_schema(docs)
    check_kubernetes(docs, server_flags, client_flags, args)
    check_compose(os.path.join(args.deploy, "compose.yaml"), server_flags, client_flags, args)
    check_dockerfile(os.path.join(os.path.dirname(os.path.abspath(args.deploy)), "Dockerfile"),
                     server_flags, client_flags, args)
    print(f"checked {len(paths)} manifest files ({len(docs)} objects, schema and structure) "
          "and compose.yaml; "
          f"{len(server_flags)} server flags, {len(client_flags)} client flags known")
    for e in errors:
        print("error:", e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
