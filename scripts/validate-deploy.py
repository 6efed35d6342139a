#!/usr/bin/env python3
"""Validates deploy/ without a cluster or a container engine (run by tests/it/deploy.rs
with the venv of scripts/deploy-tools.sh).

    validate-deploy.py DEPLOY_DIR [--k8s-config-out FILE]

- every Kubernetes manifest under DEPLOY_DIR/k8s against the Kubernetes JSON schemas
  bundled by kubernetes-validate (strict: unknown fields are errors), for each version in
  K8S_VERSIONS; then the references between them (selectors, ports, probes, volumes,
  ConfigMap/Secret names, the HPA/PDB target) and kustomization.yaml's resource list;
- DEPLOY_DIR/compose.yaml against the Compose specification's JSON schema, then what the
  schema cannot know: every service has an image, every hookgate replica its own spool
  volume, HAProxy's backend servers are exactly the hookgate services, health-checked on
  the admin port at /readyz, every topic of the config is created by kafka-init;
- the [dedupe.redis] section of both hookgate configs has exactly the keys of the shared
  dedupe config.

Prints one `error: …` line per problem and exits 1 if there is any; `ok: …` lines otherwise.
--k8s-config-out writes the ConfigMap's hookgate.toml, for `hookgate check`.
"""

import argparse
import importlib.util
import json
import pathlib
import re
import sys
import tomllib

import jsonschema
import kubernetes_validate
import yaml

# The oldest Kubernetes still commonly run and the newest the package bundles.
K8S_VERSIONS = ["1.29", "1.37"]
REDIS_KEYS = {
    "on_unavailable",
    "key_prefix",
    "pool_size",
    "connect_timeout",
    "command_timeout",
    "claim_ttl",
}
WORKLOADS = {"Deployment", "StatefulSet"}

errors = []


def error(msg):
    errors.append(msg)
    print(f"error: {msg}")


def ok(msg):
    print(f"ok: {msg}")


def load_docs(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def listen_port(cfg, section):
    listen = cfg.get(section, {}).get("listen", "")
    m = re.search(r":(\d+)$", listen)
    return int(m.group(1)) if m else None


def check_redis_section(cfg, where):
    redis = cfg.get("dedupe", {}).get("redis")
    if redis is None:
        error(f"{where}: no [dedupe.redis] section (the replicas would dedupe each on its own)")
        return
    keys = set(redis)
    url_keys = keys & {"url", "url_file"}
    if len(url_keys) != 1:
        error(f"{where}: [dedupe.redis] needs exactly one of url / url_file, found {sorted(url_keys)}")
    if keys - url_keys != REDIS_KEYS:
        error(f"{where}: [dedupe.redis] keys {sorted(keys - url_keys)} != {sorted(REDIS_KEYS)}")
    if redis.get("on_unavailable") not in ("reject", "local"):
        error(f"{where}: [dedupe.redis] on_unavailable must be reject or local")


# ---------------------------------------------------------------- Kubernetes


def k8s(deploy, config_out):
    kdir = deploy / "k8s"
    kust_path = kdir / "kustomization.yaml"
    kust = load_docs(kust_path)[0]
    listed = kust.get("resources", [])
    files = sorted(p.name for p in kdir.glob("*.yaml") if p.name != "kustomization.yaml")
    for name in listed:
        if not (kdir / name).is_file():
            error(f"k8s/kustomization.yaml lists {name}, which does not exist")
    for name in files:
        if name not in listed and not name.endswith(".example.yaml"):
            error(f"k8s/{name} is not in kustomization.yaml resources (name it *.example.yaml if it is only an example)")

    objs = []  # (file, doc)
    for name in files:
        for doc in load_docs(kdir / name):
            objs.append((name, doc))
            what = f"k8s/{name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            for v in K8S_VERSIONS:
                try:
                    kubernetes_validate.validate(doc, v, strict=True)
                except kubernetes_validate.ValidationError as e:
                    path = ".".join(str(p) for p in e.path)
                    error(f"{what}: schema {v}: {path}: {e.message}")
                except Exception as e:  # unknown kind/apiVersion, malformed document
                    error(f"{what}: schema {v}: {type(e).__name__}: {e}")
    if errors:
        print("k8s: the references between objects are not checked until the schemas pass")
        return
    ok(f"{len(objs)} Kubernetes objects in {len(files)} files against the schemas of {', '.join(K8S_VERSIONS)} (strict)")

    by_kind = {}
    for name, doc in objs:
        by_kind.setdefault(doc.get("kind"), {})[doc.get("metadata", {}).get("name")] = (name, doc)

    def has(kind, name):
        return name in by_kind.get(kind, {})

    workloads = {(k, n): d for k in WORKLOADS for n, (_, d) in by_kind.get(k, {}).items()}
    hookgate = [(k, n, d) for (k, n), d in workloads.items() if n == "hookgate"]
    if len(hookgate) != 1:
        error("k8s: expected exactly one workload named hookgate (Deployment or StatefulSet)")
        return
    hkind, _, hg = hookgate[0]

    # The hookgate config in the ConfigMap: parsed, ports and paths compared with the pod.
    cfg = None
    vols = {v["name"]: v for v in hg["spec"]["template"]["spec"].get("volumes", [])}
    cm_name = vols.get("config", {}).get("configMap", {}).get("name")
    if not has("ConfigMap", cm_name) or "hookgate.toml" not in by_kind["ConfigMap"][cm_name][1].get("data", {}):
        error(f"k8s: the hookgate pod's `config` volume names ConfigMap {cm_name!r}, which has no hookgate.toml")
    else:
        text = by_kind["ConfigMap"][cm_name][1]["data"]["hookgate.toml"]
        try:
            cfg = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            error(f"k8s: ConfigMap {cm_name} hookgate.toml: {e}")
        if config_out:
            pathlib.Path(config_out).write_text(text, encoding="utf-8")
    if cfg is not None:
        check_redis_section(cfg, "k8s ConfigMap hookgate.toml")

    for (kind, name), w in workloads.items():
        spec = w["spec"]
        tmpl = spec["template"]
        labels = tmpl.get("metadata", {}).get("labels", {})
        sel = spec.get("selector", {}).get("matchLabels", {})
        if not sel or any(labels.get(k) != v for k, v in sel.items()):
            error(f"k8s {kind}/{name}: selector {sel} does not match the pod labels {labels}")
        pod = tmpl["spec"]
        psc = pod.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True:
            error(f"k8s {kind}/{name}: pod securityContext.runAsNonRoot must be true")
        claim_names = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])}
        vol_names = {v["name"] for v in pod.get("volumes", [])}
        for v in pod.get("volumes", []):
            if "configMap" in v and not has("ConfigMap", v["configMap"]["name"]):
                error(f"k8s {kind}/{name}: volume {v['name']} names ConfigMap {v['configMap']['name']}, not defined")
            if "secret" in v and not has("Secret", v["secret"]["secretName"]):
                error(f"k8s {kind}/{name}: volume {v['name']} names Secret {v['secret']['secretName']}, not defined (not even in an example)")
        if kind == "StatefulSet":
            svc = spec.get("serviceName")
            if not has("Service", svc) or by_kind["Service"][svc][1]["spec"].get("clusterIP") not in ("None", None):
                error(f"k8s StatefulSet/{name}: serviceName {svc!r} is not a Service defined here")
        for c in pod["containers"]:
            csc = c.get("securityContext", {})
            for key, want in (("readOnlyRootFilesystem", True), ("allowPrivilegeEscalation", False)):
                if csc.get(key) is not want:
                    error(f"k8s {kind}/{name}: container {c['name']}: securityContext.{key} must be {want}")
            if not c.get("resources", {}).get("requests", {}).get("cpu"):
                error(f"k8s {kind}/{name}: container {c['name']}: no CPU request (the HPA's utilisation is relative to it)")
            if not c.get("resources", {}).get("limits", {}).get("memory"):
                error(f"k8s {kind}/{name}: container {c['name']}: no memory limit")
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                p = c.get(probe)
                if p is None:
                    continue
                for act in ("httpGet", "tcpSocket"):
                    port = p.get(act, {}).get("port")
                    if isinstance(port, str) and port not in ports:
                        error(f"k8s {kind}/{name}: {probe} uses port {port!r}, not a container port")
            for m in c.get("volumeMounts", []):
                if m["name"] not in vol_names | claim_names:
                    error(f"k8s {kind}/{name}: volumeMount {m['name']} has no volume or claim")
            if name != "hookgate":
                if "readinessProbe" not in c or "livenessProbe" not in c:
                    error(f"k8s {kind}/{name}: container {c['name']}: readiness and liveness probes expected")
                continue
            # hookgate's own container: ports and probes against its config.
            if cfg is not None:
                if ports.get("http") != listen_port(cfg, "server"):
                    error(f"k8s {kind}/hookgate: container port http {ports.get('http')} != [server] listen port {listen_port(cfg, 'server')}")
                if ports.get("admin") != listen_port(cfg, "admin"):
                    error(f"k8s {kind}/hookgate: container port admin {ports.get('admin')} != [admin] listen port {listen_port(cfg, 'admin')}")
                spool = cfg.get("spool", {}).get("path", "")
                mounted = [m for m in c.get("volumeMounts", []) if spool.startswith(m["mountPath"].rstrip("/") + "/")]
                if not mounted:
                    error(f"k8s {kind}/hookgate: the spool path {spool} is on no mounted volume (read-only root)")
                elif kind == "StatefulSet" and mounted[-1]["name"] not in claim_names:
                    error(f"k8s {kind}/hookgate: the spool is on {mounted[-1]['name']}, not on a volumeClaimTemplate")
                for m in re.findall(r'_file\s*=\s*"([^"]+)"', by_kind["ConfigMap"][cm_name][1]["data"]["hookgate.toml"]):
                    if not any(m.startswith(vm["mountPath"].rstrip("/") + "/") for vm in c.get("volumeMounts", [])):
                        error(f"k8s {kind}/hookgate: the config reads {m}, which is on no mounted volume")
            for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
                got = c.get(probe, {}).get("httpGet", {})
                if got.get("path") != path or got.get("port") != "admin":
                    error(f"k8s {kind}/hookgate: {probe} must be GET {path} on the admin port, found {got}")

    for sname, (_, svc) in by_kind.get("Service", {}).items():
        sel = svc["spec"].get("selector", {})
        targets = [
            d for d in workloads.values()
            if all(d["spec"]["template"]["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())
        ]
        if not targets:
            error(f"k8s Service/{sname}: selector {sel} matches no pod template")
        for p in svc["spec"].get("ports", []):
            tp = p.get("targetPort")
            if isinstance(tp, str) and not any(
                tp in {cp.get("name") for c in d["spec"]["template"]["spec"]["containers"] for cp in c.get("ports", [])}
                for d in targets
            ):
                error(f"k8s Service/{sname}: targetPort {tp!r} is not a port of the selected pods")

    hg_labels = hg["spec"]["template"]["metadata"]["labels"]
    replicas = hg["spec"].get("replicas", 1)
    pdbs = by_kind.get("PodDisruptionBudget", {})
    if not pdbs:
        error("k8s: no PodDisruptionBudget")
    for pname, (_, pdb) in pdbs.items():
        sel = pdb["spec"]["selector"].get("matchLabels", {})
        if any(hg_labels.get(k) != v for k, v in sel.items()):
            error(f"k8s PodDisruptionBudget/{pname}: selector {sel} does not select the hookgate pods")
        if isinstance(pdb["spec"].get("minAvailable"), int) and pdb["spec"]["minAvailable"] >= replicas:
            error(f"k8s PodDisruptionBudget/{pname}: minAvailable >= replicas blocks every node drain")
    hpas = by_kind.get("HorizontalPodAutoscaler", {})
    if not hpas:
        error("k8s: no HorizontalPodAutoscaler")
    for hname, (_, hpa) in hpas.items():
        ref = hpa["spec"]["scaleTargetRef"]
        if (ref.get("kind"), ref.get("name")) != (hkind, "hookgate"):
            error(f"k8s HorizontalPodAutoscaler/{hname}: targets {ref.get('kind')}/{ref.get('name')}, not {hkind}/hookgate")
        lo, hi = hpa["spec"].get("minReplicas", 1), hpa["spec"]["maxReplicas"]
        if not lo <= replicas <= hi:
            error(f"k8s HorizontalPodAutoscaler/{hname}: replicas {replicas} outside [{lo}, {hi}]")
        if not any(m.get("resource", {}).get("name") == "cpu" for m in hpa["spec"].get("metrics", [])):
            error(f"k8s HorizontalPodAutoscaler/{hname}: no CPU metric")
    ok(f"k8s references: hookgate {hkind} x{replicas}, {len(by_kind.get('Service', {}))} Services, PDB, HPA, kustomization")


# ---------------------------------------------------------------- Compose


def compose_schema():
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("error: the compose spec schema is missing: run scripts/deploy-tools.sh")
    path = pathlib.Path(spec.submodule_search_locations[0]) / "config" / "compose_spec.json"
    return json.loads(path.read_text(encoding="utf-8"))


def haproxy_backend(path):
    """The `server` lines and checks of the `backend hookgate` section."""
    servers, opts, section = [], [], None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if not raw[0].isspace():
            section = line
            continue
        if section == "backend hookgate":
            words = line.split()
            if words[0] == "server":
                servers.append((words[1], words[2]))
            else:
                opts.append(line)
    return servers, opts


def compose(deploy):
    path = deploy / "compose.yaml"
    doc = load_docs(path)[0]
    schema = compose_schema()
    # The file says draft 2019-09 (as `http://…#`, which jsonschema does not look up).
    validator = jsonschema.Draft201909Validator(schema)
    n = 0
    for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
        n += 1
        error(f"compose.yaml: schema: {'.'.join(str(p) for p in e.path) or '(top)'}: {e.message}")
    if n == 0:
        ok("compose.yaml against the Compose specification's JSON schema")

    services = doc.get("services", {})
    named_volumes = set((doc.get("volumes") or {}).keys())
    secrets = doc.get("secrets") or {}
    host_ports = {}
    for name, svc in services.items():
        if not isinstance(svc, dict):
            continue
        if not svc.get("image"):
            error(f"compose service {name}: no image")
        for dep in svc.get("depends_on") or []:
            if dep not in services:
                error(f"compose service {name}: depends_on {dep}, not a service")
        for s in svc.get("secrets") or []:
            s = s if isinstance(s, str) else s.get("source")
            if s not in secrets:
                error(f"compose service {name}: secret {s} is not declared")
        for v in svc.get("volumes") or []:
            src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
            if src.startswith((".", "/")):
                if not (deploy / src).exists():
                    error(f"compose service {name}: bind mount {src} does not exist")
            elif src not in named_volumes:
                error(f"compose service {name}: volume {src} is not declared")
        for p in svc.get("ports") or []:
            parts = str(p).split(":")
            if len(parts) >= 2:
                host = ":".join(parts[:-1])
                if host in host_ports:
                    error(f"compose: host port {host} published by {host_ports[host]} and {name}")
                host_ports[host] = name

    replicas = sorted(n for n in services if n.startswith("hookgate-"))
    if len(replicas) < 2:
        error(f"compose: {len(replicas)} hookgate replica(s), expected several")
    spools, cfg = {}, None
    for name in replicas:
        svc = services[name]
        vols = [v if isinstance(v, str) else f"{v.get('source')}:{v.get('target')}" for v in svc.get("volumes") or []]
        spool = [v.split(":")[0] for v in vols if v.split(":")[1] == "/var/lib/hookgate"]
        if len(spool) != 1 or spool[0] not in named_volumes:
            error(f"compose {name}: needs one named volume at /var/lib/hookgate (its spool), found {spool}")
        else:
            if spool[0] in spools:
                error(f"compose {name}: shares spool volume {spool[0]} with {spools[spool[0]]} (a spool is locked to one process)")
            spools[spool[0]] = name
        conf = [v.split(":")[0] for v in vols if v.split(":")[1] == "/etc/hookgate/hookgate.toml"]
        if len(conf) != 1:
            error(f"compose {name}: no config mounted at /etc/hookgate/hookgate.toml")
            continue
        cfg_path = deploy / conf[0]
        if cfg_path.is_file():
            cfg = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
            for f in re.findall(r'_file\s*=\s*"/run/secrets/([^"]+)"', cfg_path.read_text(encoding="utf-8")):
                listed = [s if isinstance(s, str) else s.get("source") for s in svc.get("secrets") or []]
                if f not in listed:
                    error(f"compose {name}: the config reads /run/secrets/{f}, not a secret of the service")
        env = svc.get("environment") or {}
        if any(re.search(r"(?i)secret|password|token", str(k)) for k in env):
            error(f"compose {name}: a secret in the environment; use `secrets:` files")
        if svc.get("read_only") is not True:
            error(f"compose {name}: read_only should be true (the spool volume is the only writable path)")
    if cfg is None:
        return
    check_redis_section(cfg, "compose/hookgate.toml")
    redis_url = cfg.get("dedupe", {}).get("redis", {}).get("url", "")
    m = re.match(r"rediss?://(?:[^@/]*@)?([^:/]+)", redis_url)
    if m and m.group(1) not in services:
        error(f"compose: [dedupe.redis] url host {m.group(1)} is not a compose service")

    servers, opts = haproxy_backend(deploy / "haproxy" / "haproxy.cfg")
    hosts = sorted(addr.rsplit(":", 1)[0] for _, addr in servers)
    if hosts != replicas:
        error(f"haproxy.cfg: backend hookgate servers {hosts} != compose hookgate services {replicas}")
    web = listen_port(cfg, "server")
    for sname, addr in servers:
        if addr.rsplit(":", 1)[-1] != str(web):
            error(f"haproxy.cfg: server {sname} {addr}: not the [server] listen port {web}")
    joined = "\n".join(opts)
    if "balance roundrobin" not in joined:
        error("haproxy.cfg: backend hookgate is not `balance roundrobin`")
    if not re.search(r"http-check send meth GET uri /readyz\b", joined) or "option httpchk" not in joined:
        error("haproxy.cfg: backend hookgate does not health-check GET /readyz")
    if not re.search(rf"\bcheck port {listen_port(cfg, 'admin')}\b", joined):
        error(f"haproxy.cfg: the health check is not on the admin port {listen_port(cfg, 'admin')}")

    init = json.dumps(services.get("kafka-init", {}).get("command", ""))
    for src in cfg.get("sources", []):
        topic = src.get("topic")
        if topic and not re.search(rf"(?<![\w.]){re.escape(topic)}(?![\w.])", init):
            error(f"compose: topic {topic} of source {src.get('name')} is not created by kafka-init")
    ok(f"compose: {len(replicas)} hookgate replicas with their own spools; HAProxy backends = {hosts}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("deploy")
    ap.add_argument("--k8s-config-out")
    a = ap.parse_args()
    deploy = pathlib.Path(a.deploy)
    for part in (lambda: k8s(deploy, a.k8s_config_out), lambda: compose(deploy)):
        try:
            part()
        except (KeyError, TypeError, AttributeError, IndexError, ValueError) as e:
            # A document the checks did not expect (the schema passes more shapes than the
            # checks read): a problem, never a traceback that hides the others.
            error(f"malformed deploy file: {type(e).__name__}: {e}")
    if errors:
        print(f"{len(errors)} problem(s) found")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
