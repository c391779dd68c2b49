"""A tiny, offline Kustomize renderer for the contract tests (no kustomize binary needed).

It supports exactly the subset that deploy/k8s uses and fails loudly on anything else, so a
kustomization that grows a feature this renderer does not understand breaks the tests instead
of being rendered wrongly:

- ``resources``: files (multi-document YAML) and directories holding a kustomization.yaml;
- ``patches``: strategic-merge patches, inline (``patch``) or from a file (``path``), matched
  to exactly one resource by kind and name (and namespace when the patch gives one).
  Maps merge deeply, ``null`` deletes a key, lists of containers / initContainers / env /
  volumes merge by ``name`` and volumeMounts by ``mountPath``; every other list is replaced;
- ``namespace`` (namespaced kinds only), ``images`` (newName / newTag / digest);
- ``labels`` (pairs, includeSelectors, includeTemplates: pod and PVC templates) and
  ``commonLabels``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

Doc = dict[str, Any]

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_KEYS = frozenset(
    {"apiVersion", "kind", "resources", "patches", "namespace", "images", "labels", "commonLabels"}
)
CLUSTER_SCOPED_KINDS = frozenset(
    {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "PersistentVolume",
        "StorageClass",
        "PriorityClass",
        "IngressClass",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "APIService",
    }
)
# Lists merged element-wise (by this key) by strategic merge; all other lists are replaced.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
}
POD_TEMPLATE_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})


class KustomizeError(Exception):
    """The kustomization is invalid or uses something this renderer does not support."""


def render(directory: str | Path) -> list[Doc]:
    """Render the kustomization in ``directory`` to a list of resource documents."""
    return _build(Path(directory).resolve(), ())


def _kustomization_file(directory: Path) -> Path:
    for name in KUSTOMIZATION_FILES:
        candidate = directory / name
        if candidate.is_file():
            return candidate
    raise KustomizeError(f"no kustomization file in {directory}")


def _load_docs(text: str, origin: str) -> list[Doc]:
    docs = []
    for doc in yaml.safe_load_all(text):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise KustomizeError(f"{origin}: expected a mapping, got {type(doc).__name__}")
        docs.append(doc)
    return docs


def _build(directory: Path, stack: tuple[Path, ...]) -> list[Doc]:
    if directory in stack:
        raise KustomizeError(f"kustomization cycle through {directory}")
    path = _kustomization_file(directory)
    spec = yaml.safe_load(path.read_text()) or {}
    unsupported = set(spec) - SUPPORTED_KEYS
    if unsupported:
        raise KustomizeError(f"{path}: unsupported keys {sorted(unsupported)}")

    resources: list[Doc] = []
    for entry in spec.get("resources", []):
        target = (directory / entry).resolve()
        if target.is_dir():
            resources.extend(_build(target, (*stack, directory)))
        elif target.is_file():
            resources.extend(_load_docs(target.read_text(), str(target)))
        else:
            raise KustomizeError(f"{path}: resource {entry!r} not found (remote bases unsupported)")
    _check_unique(resources, path)

    for index, entry in enumerate(spec.get("patches", [])):
        _apply_patch_entry(resources, entry, directory, f"{path}: patches[{index}]")

    namespace = spec.get("namespace")
    if namespace:
        for doc in resources:
            if doc.get("kind") not in CLUSTER_SCOPED_KINDS:
                doc.setdefault("metadata", {})["namespace"] = namespace

    for label_spec in spec.get("labels", []):
        include_selectors = bool(label_spec.get("includeSelectors", False))
        include_templates = include_selectors or bool(label_spec.get("includeTemplates", False))
        _add_labels(resources, label_spec.get("pairs", {}), include_selectors, include_templates)
    if spec.get("commonLabels"):
        _add_labels(resources, spec["commonLabels"], True, True)

    for image in spec.get("images", []):
        _set_image(resources, image, path)
    return resources


def _resource_id(doc: Doc) -> tuple[str, str, str | None]:
    metadata = doc.get("metadata") or {}
    if "kind" not in doc or "name" not in metadata:
        raise KustomizeError(f"resource without kind or metadata.name: {doc}")
    return doc["kind"], metadata["name"], metadata.get("namespace")


def _check_unique(resources: Iterable[Doc], origin: Path) -> None:
    seen: set[tuple[str, str, str | None]] = set()
    for doc in resources:
        rid = _resource_id(doc)
        if rid in seen:
            raise KustomizeError(f"{origin}: duplicate resource {rid}")
        seen.add(rid)


def _apply_patch_entry(resources: list[Doc], entry: Doc, directory: Path, origin: str) -> None:
    if "target" in entry or "options" in entry:
        raise KustomizeError(f"{origin}: patch targets/options are unsupported")
    if "path" in entry:
        text = (directory / entry["path"]).read_text()
    elif "patch" in entry:
        text = entry["patch"]
    else:
        raise KustomizeError(f"{origin}: patch needs `path` or `patch`")
    docs = _load_docs(text, origin)
    if not docs:
        raise KustomizeError(f"{origin}: empty patch (JSON 6902 patches are unsupported)")
    for patch in docs:
        kind, name, namespace = _resource_id(patch)
        matches = [
            doc
            for doc in resources
            if doc["kind"] == kind
            and doc["metadata"]["name"] == name
            and (namespace is None or doc["metadata"].get("namespace") == namespace)
        ]
        if len(matches) != 1:
            raise KustomizeError(f"{origin}: patch for {kind}/{name} matches {len(matches)}")
        body = {key: value for key, value in patch.items() if key not in ("apiVersion", "kind")}
        body["metadata"] = {k: v for k, v in patch["metadata"].items() if k != "name"}
        if not body["metadata"]:
            del body["metadata"]
        strategic_merge(matches[0], body)


def strategic_merge(target: Doc, patch: Doc, path: str = "") -> Doc:
    """Merge ``patch`` into ``target`` in place (the subset described in the module doc)."""
    for key, value in patch.items():
        where = f"{path}.{key}" if path else key
        if key.startswith("$"):
            raise KustomizeError(f"patch directive {where} is unsupported")
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            strategic_merge(target[key], value, where)
        elif key in MERGE_KEYS and isinstance(value, list) and isinstance(target.get(key), list):
            _merge_list(target[key], value, MERGE_KEYS[key], where)
        else:
            target[key] = copy.deepcopy(value)
    return target


def _merge_list(target: list[Any], patch: list[Any], merge_key: str, path: str) -> None:
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise KustomizeError(f"{path}: list items need a {merge_key!r}")
        existing = [elem for elem in target if elem.get(merge_key) == item[merge_key]]
        if existing:
            strategic_merge(existing[0], item, f"{path}[{item[merge_key]}]")
        else:
            target.append(copy.deepcopy(item))


def _add_labels(
    resources: Iterable[Doc], pairs: dict[str, str], selectors: bool, templates: bool
) -> None:
    for doc in resources:
        doc.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
        spec = doc.get("spec") or {}
        kind = doc["kind"]
        if templates and kind in POD_TEMPLATE_KINDS:
            template_meta = spec.setdefault("template", {}).setdefault("metadata", {})
            template_meta.setdefault("labels", {}).update(pairs)
            # kustomize labels a StatefulSet's PVC templates as templates too.
            for claim in spec.get("volumeClaimTemplates") or []:
                claim.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
        if not selectors:
            continue
        if kind in POD_TEMPLATE_KINDS or kind == "PodDisruptionBudget":
            spec.setdefault("selector", {}).setdefault("matchLabels", {}).update(pairs)
        elif kind == "Service":
            spec.setdefault("selector", {}).update(pairs)
        elif kind == "NetworkPolicy":
            spec.setdefault("podSelector", {}).setdefault("matchLabels", {}).update(pairs)


def _containers(node: Any) -> Iterator[Doc]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                yield from (c for c in value if isinstance(c, dict))
            else:
                yield from _containers(value)
    elif isinstance(node, list):
        for value in node:
            yield from _containers(value)


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """``registry/name:tag@digest`` -> (name, tag, digest)."""
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag, digest or None


def _set_image(resources: Iterable[Doc], spec: Doc, origin: Path) -> None:
    unknown = set(spec) - {"name", "newName", "newTag", "digest"}
    if unknown:
        raise KustomizeError(f"{origin}: unsupported image fields {sorted(unknown)}")
    for doc in resources:
        for container in _containers(doc.get("spec")):
            name, tag, digest = split_image(container.get("image", ""))
            if name != spec["name"]:
                continue
            name = spec.get("newName", name)
            if "newTag" in spec:
                tag, digest = str(spec["newTag"]), None
            if "digest" in spec:
                tag, digest = None, spec["digest"]
            image = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
            container["image"] = image
