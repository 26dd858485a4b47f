"""Renders a kustomize folder (deploy/kubernetes) as `kubectl apply -k` would for the fields
its kustomization.yaml uses (namespace, labels, resources), and validates every object offline
against the Kubernetes OpenAPI schemas bundled with kubernetes-validate, strictly (an unknown or
misspelt field is an error), for each Kubernetes version in VERSIONS.

kustomize itself is not packaged where the tests run, so this renderer refuses any
kustomization field, label option or kind it does not implement rather than ignore it, and
checks that `resources` lists every YAML file of the folder and nothing else.

Usage: render.py FOLDER. Prints {"validator", "versions", "objects"} as JSON on stdout; exits 1
with every problem on stderr."""

import json
import pathlib
import sys

import kubernetes_validate
import yaml

# The oldest version the manifests need (the preStop `sleep` action is on by default from
# 1.30), and the newest the installed validator has schemas for.
VERSIONS = ["1.30", kubernetes_validate.latest_version()]

KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "namespace", "labels", "resources"}
LABEL_FIELDS = {"pairs", "includeSelectors", "includeTemplates"}
CLUSTER_SCOPED = {"Namespace"}
NAMESPACED = {
    "ConfigMap",
    "Deployment",
    "HorizontalPodAutoscaler",
    "NetworkPolicy",
    "PodDisruptionBudget",
    "Secret",
    "Service",
    "ServiceAccount",
}
# Kinds whose pod template `includeTemplates` labels.
WORKLOADS = {"Deployment"}


def render(folder, problems):
    kust = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(kust) - KUSTOMIZATION_FIELDS
    if unknown:
        problems.append(f"kustomization.yaml: fields this renderer does not implement: {sorted(unknown)}")
    if kust.get("kind") != "Kustomization":
        problems.append("kustomization.yaml: kind must be Kustomization")
    namespace = kust.get("namespace")
    resources = kust.get("resources") or []
    files = sorted(p.name for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.name != "kustomization.yaml")
    for name in sorted(set(files) - set(resources)):
        problems.append(f"kustomization.yaml: {name} is in the folder but not in resources")
    for name in resources:
        if name not in files:
            problems.append(f"kustomization.yaml: resource {name} is not a YAML file of the folder")
    if len(set(resources)) != len(resources):
        problems.append("kustomization.yaml: a resource is listed twice")

    objects, seen = [], set()
    for name in resources:
        if name not in files:
            continue
        for doc in yaml.safe_load_all((folder / name).read_text()):
            if not doc:
                continue
            kind, meta = doc.get("kind"), doc.setdefault("metadata", {})
            key = (kind, meta.get("name"))
            where = f"{name}: {kind}/{meta.get('name')}"
            if key in seen:
                problems.append(f"{where}: defined twice")
            seen.add(key)
            if kind in NAMESPACED:
                if namespace:
                    meta["namespace"] = namespace
            elif kind in CLUSTER_SCOPED:
                if kind == "Namespace" and namespace and meta.get("name") != namespace:
                    problems.append(f"{where}: a Namespace other than the kustomization's namespace ({namespace})")
            else:
                problems.append(f"{where}: kind unknown to this renderer (add it to NAMESPACED or CLUSTER_SCOPED)")
            for entry in kust.get("labels") or []:
                unknown = set(entry) - LABEL_FIELDS
                if unknown or entry.get("includeSelectors"):
                    problems.append(f"kustomization.yaml: label options this renderer does not implement: {sorted(unknown) or 'includeSelectors: true'}")
                pairs = entry.get("pairs") or {}
                meta.setdefault("labels", {}).update(pairs)
                if entry.get("includeTemplates") and kind in WORKLOADS:
                    tmeta = doc["spec"]["template"].setdefault("metadata", {})
                    tmeta.setdefault("labels", {}).update(pairs)
            objects.append((where, doc))
    return objects


def main():
    folder = pathlib.Path(sys.argv[1])
    problems = []
    objects = render(folder, problems)
    for where, doc in objects:
        for version in VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                problems.append(f"{where}: invalid against Kubernetes {version}: {path}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                problems.append(f"{where}: {e.message}")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)
    json.dump(
        {
            "validator": f"kubernetes-validate {kubernetes_validate.__version__}",
            "versions": VERSIONS,
            "objects": [doc for _, doc in objects],
        },
        sys.stdout,
    )


main()
