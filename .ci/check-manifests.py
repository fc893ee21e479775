#!/usr/bin/env python3
"""Semantic checks on the Kubernetes manifests that JSON-schema validation cannot make.

kubernetes-validate (see validate-manifests.sh) checks that each object has the shape of
its schema. It does not check that a volumeMount names a volume that exists, that a probe's
named port is declared, that a quantity parses, that a Service selects any pod, or that
the project's own rules hold. This script checks those:

  * restricted Pod Security Standard plus a read-only root filesystem for every container;
  * requests (cpu, memory) and a memory limit on every container, and valid quantities;
  * every emptyDir with medium Memory has a sizeLimit;
  * no subPath mount of a volume that vault-rotator writes (subPath pins the first file);
  * vault-rotator containers: a native sidecar has a startupProbe on /ready and a
    livenessProbe on /health; --once is never a sidecar; --revoke-on-exit only in a native
    sidecar; the --jwt-file directory is mounted; the file carries the measured-resources
    marker;
  * references resolve within a directory: Secrets, ConfigMaps (incl. kustomize
    configMapGenerator), ServiceAccounts, Service selectors, Deployment selectors,
    kustomization resources and generator files.

Usage: check-manifests.py DIR...   (exit 1 on any finding)
Needs only PyYAML (a dependency of kubernetes-validate).
"""

import os
import re
import sys

import yaml

MARKER = "# measured: see README performance table"
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
BUILTIN_SERVICE_ACCOUNTS = {"default"}

errors = []


def err(where, msg):
    errors.append(f"{where}: {msg}")


def pod_spec_of(obj):
    """The pod template's spec and labels of a workload object, or (None, None)."""
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "Pod":
        return spec, (obj.get("metadata") or {}).get("labels") or {}
    if kind == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
        kind = "Job"
    if kind in POD_KINDS:
        tpl = spec.get("template") or {}
        return tpl.get("spec"), (tpl.get("metadata") or {}).get("labels") or {}
    return None, None


def is_rotator(container):
    image = container.get("image", "")
    return image.split("/")[-1].split(":")[0].split("@")[0] == "vault-rotator"


def flag(args, name):
    """Value of --name=value / --name value, True for a bare --name, None if absent."""
    for i, a in enumerate(args):
        if a == f"--{name}":
            nxt = args[i + 1] if i + 1 < len(args) else None
            return nxt if nxt is not None and not nxt.startswith("--") else True
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    return None


def check_security(where, pod, c):
    psc = pod.get("securityContext") or {}
    sc = c.get("securityContext") or {}
    if sc.get("allowPrivilegeEscalation") is not False:
        err(where, "securityContext.allowPrivilegeEscalation must be false")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        err(where, "securityContext.capabilities.drop must contain ALL")
    if (sc.get("capabilities") or {}).get("add"):
        err(where, "securityContext.capabilities.add must be empty")
    if sc.get("readOnlyRootFilesystem") is not True:
        err(where, "securityContext.readOnlyRootFilesystem must be true")
    if sc.get("privileged"):
        err(where, "privileged container")
    if not (sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True):
        err(where, "runAsNonRoot must be true (container or pod)")
    if sc.get("runAsUser", psc.get("runAsUser")) == 0:
        err(where, "runAsUser must not be 0")
    seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        err(where, "seccompProfile must be RuntimeDefault (container or pod)")


def check_resources(where, c):
    res = c.get("resources") or {}
    req, lim = res.get("requests") or {}, res.get("limits") or {}
    for key in ("cpu", "memory"):
        if key not in req:
            err(where, f"resources.requests.{key} missing")
    if "memory" not in lim:
        err(where, "resources.limits.memory missing")
    for section in (req, lim):
        for key, value in section.items():
            if not QUANTITY.match(str(value)):
                err(where, f"resources {key}={value!r} is not a valid quantity")


def check_probe_ports(where, c):
    ports = {p.get("name") for p in c.get("ports") or [] if p.get("name")}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        p = c.get(probe)
        if not p:
            continue
        port = (p.get("httpGet") or p.get("tcpSocket") or {}).get("port")
        if isinstance(port, str) and port not in ports:
            err(where, f"{probe} uses port {port!r}, not declared in ports")


def probe_path(c, probe):
    return ((c.get(probe) or {}).get("httpGet") or {}).get("path")


def check_rotator(where, c, native, in_init, vol_mounts):
    args = [str(a) for a in c.get("args") or []]
    once = flag(args, "once") is not None
    if native:
        if once:
            err(where, "--once in a native sidecar: it would exit and be restarted forever")
        if probe_path(c, "startupProbe") != "/ready":
            err(where, "native sidecar needs startupProbe httpGet /ready (app waits for it)")
        if probe_path(c, "livenessProbe") != "/health":
            err(where, "sidecar needs livenessProbe httpGet /health")
    elif in_init and not once:
        err(where, "plain init container without --once would never exit")
    elif not in_init and probe_path(c, "livenessProbe") != "/health":
        err(where, "sidecar needs livenessProbe httpGet /health")
    if flag(args, "revoke-on-exit") is not None and not native:
        err(where, "--revoke-on-exit only in a native sidecar (stopped after the app)")
    jwt = flag(args, "jwt-file")
    if isinstance(jwt, str):
        if not any(jwt.startswith(m.rstrip("/") + "/") for m in vol_mounts):
            err(where, f"--jwt-file {jwt} is not under any volumeMount")
    out = flag(args, "output")
    if isinstance(out, str) and not any(out.startswith(m.rstrip("/") + "/") for m in vol_mounts):
        err(where, f"--output {out} is not under any volumeMount")


def check_pod(where, pod, text):
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    for name, v in volumes.items():
        ed = v.get("emptyDir")
        if ed is not None and ed.get("medium") == "Memory" and "sizeLimit" not in ed:
            err(f"{where} volume {name}", "emptyDir medium Memory needs a sizeLimit")
        if ed is not None and "sizeLimit" in ed and not QUANTITY.match(str(ed["sizeLimit"])):
            err(f"{where} volume {name}", f"sizeLimit {ed['sizeLimit']!r} is not a quantity")
    rotator_volumes = set()
    containers = [(c, True) for c in pod.get("initContainers") or []]
    containers += [(c, False) for c in pod.get("containers") or []]
    names = [c.get("name") for c, _ in containers]
    if len(names) != len(set(names)):
        err(where, f"duplicate container names {names}")
    rotators = 0
    for c, in_init in containers:
        cw = f"{where} container {c.get('name')}"
        mounts = c.get("volumeMounts") or []
        paths = [m.get("mountPath") for m in mounts]
        if len(paths) != len(set(paths)):
            err(cw, "duplicate mountPath")
        for m in mounts:
            if m.get("name") not in volumes:
                err(cw, f"volumeMount {m.get('name')!r} has no volume")
        if c.get("restartPolicy") and not in_init:
            err(cw, "restartPolicy is only valid on init containers")
        check_security(cw, pod, c)
        check_resources(cw, c)
        check_probe_ports(cw, c)
        if is_rotator(c):
            rotators += 1
            native = in_init and c.get("restartPolicy") == "Always"
            check_rotator(cw, c, native, in_init, [m.get("mountPath") for m in mounts])
            rotator_volumes |= {m["name"] for m in mounts if not m.get("readOnly")}
    for c, _ in containers:
        for m in c.get("volumeMounts") or []:
            if m.get("name") in rotator_volumes and (m.get("subPath") or m.get("subPathExpr")):
                err(f"{where} container {c.get('name')}",
                    f"subPath mount of {m['name']!r}: it would pin the first credential forever")
    if rotators:
        if pod.get("automountServiceAccountToken") is not False:
            err(where, "automountServiceAccountToken should be false (token is projected)")
        if text.count(MARKER) < rotators:
            err(where, f"each vault-rotator resources block needs the marker {MARKER!r}")


def refs_of(pod):
    """(kind, name) of Secrets/ConfigMaps a pod spec needs (non-optional)."""
    out = set()
    for v in pod.get("volumes") or []:
        if "secret" in v and not v["secret"].get("optional"):
            out.add(("Secret", v["secret"].get("secretName")))
        if "configMap" in v and not v["configMap"].get("optional"):
            out.add(("ConfigMap", v["configMap"].get("name")))
    for c in (pod.get("initContainers") or []) + (pod.get("containers") or []):
        for e in c.get("env") or []:
            vf = e.get("valueFrom") or {}
            for key, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
                if key in vf and not vf[key].get("optional"):
                    out.add((kind, vf[key].get("name")))
        for ef in c.get("envFrom") or []:
            for key, kind in (("secretRef", "Secret"), ("configMapRef", "ConfigMap")):
                if key in ef and not ef[key].get("optional"):
                    out.add((kind, ef[key].get("name")))
    return out


def check_dir(d):
    files = sorted(f for f in os.listdir(d) if f.endswith((".yaml", ".yml")))
    defined = set()
    needed = []
    pods = []
    services = []
    kustomization = None
    for f in files:
        path = os.path.join(d, f)
        text = open(path, encoding="utf-8").read()
        if f in ("kustomization.yaml", "kustomization.yml"):
            kustomization = yaml.safe_load(text) or {}
            continue
        for i, obj in enumerate(yaml.safe_load_all(text)):
            if not obj:
                continue
            kind, name = obj.get("kind"), (obj.get("metadata") or {}).get("name")
            where = f"{path} {kind}/{name}"
            defined.add((kind, name))
            if kind == "Service":
                services.append((where, (obj.get("spec") or {}).get("selector") or {}))
            pod, labels = pod_spec_of(obj)
            if pod is None:
                continue
            pods.append(labels)
            check_pod(where, pod, text)
            sel = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels")
            if sel and any(labels.get(k) != v for k, v in sel.items()):
                err(where, f"selector {sel} does not match template labels {labels}")
            for ref in refs_of(pod):
                needed.append((where, ref))
            sa = pod.get("serviceAccountName")
            if sa and sa not in BUILTIN_SERVICE_ACCOUNTS:
                needed.append((where, ("ServiceAccount", sa)))
    if kustomization is not None:
        for r in kustomization.get("resources") or []:
            if not os.path.exists(os.path.join(d, r)):
                err(f"{d}/kustomization.yaml", f"resource {r} does not exist")
        for g in kustomization.get("configMapGenerator") or []:
            defined.add(("ConfigMap", g.get("name")))
            for fspec in g.get("files") or []:
                fname = fspec.split("=", 1)[-1]
                if not os.path.exists(os.path.join(d, fname)):
                    err(f"{d}/kustomization.yaml", f"generator file {fname} does not exist")
        for g in kustomization.get("secretGenerator") or []:
            defined.add(("Secret", g.get("name")))
    # The app manifests' ServiceAccount lives next to them; the standalone files
    # (job.yaml, ...) use it too, so resolve per directory, not per file.
    for where, ref in needed:
        if ref not in defined:
            err(where, f"references {ref[0]} {ref[1]!r}, not defined in {d}")
    for where, selector in services:
        if selector and not any(all(l.get(k) == v for k, v in selector.items()) for l in pods):
            err(where, f"Service selector {selector} matches no pod template in {d}")


def main(argv):
    if not argv:
        print(__doc__.strip().splitlines()[0])
        print("usage: check-manifests.py DIR...")
        return 2
    for d in argv:
        check_dir(d)
    for e in errors:
        print(f"ERROR {e}")
    if errors:
        print(f"check-manifests: {len(errors)} problem(s)")
        return 1
    print(f"check-manifests: OK ({', '.join(argv)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
