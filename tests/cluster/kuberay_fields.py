"""Writes kuberay-<version>-fields.txt, the fields test_cluster_files.py allows in KubeRay manifests, from the CRDs.

Source: the CRD files of a KubeRay release, ray-operator/config/crd/bases/ray.io_{rayclusters,rayjobs,raycronjobs}.yaml
in github.com/ray-project/kuberay at its release tag; the openAPIV3Schema of CRD version v1. Not run by the tests:
run it by hand when the project moves to another KubeRay release, e.g.

    git -C kuberay show v1.7.0:ray-operator/config/crd/bases/ray.io_rayjobs.yaml > crds/ray.io_rayjobs.yaml  # x3
    .venv/bin/python tests/cluster/kuberay_fields.py crds --version v1.7.0 --commit <sha> > tests/cluster/...txt

Format: one field path per line (`[]` = a list item, `*` = any key of a map), `path = a|b` where the schema lists the
allowed values; `[Kind]` starts a section, and `path -> Section` says that the subtree at `path` has exactly the fields
of that section (the generator checks that it does before writing the reference).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

CRDS = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml",
        "RayCronJob": "ray.io_raycronjobs.yaml"}


def fields(schema: dict, prefix: str = "") -> dict[str, list[str] | None]:
    """Every field path under `schema` -> its enum (or None)."""
    out: dict[str, list[str] | None] = {}
    for key, sub in (schema.get("properties") or {}).items():
        path = f"{prefix}.{key}" if prefix else key
        out[path] = sub.get("enum")
        out.update(fields(sub, path))
    if isinstance(schema.get("items"), dict):
        out.update(fields(schema["items"], f"{prefix}[]"))
    if isinstance(schema.get("additionalProperties"), dict):
        out[f"{prefix}.*"] = schema["additionalProperties"].get("enum")
        out.update(fields(schema["additionalProperties"], f"{prefix}.*"))
    return out


def replace(section: dict, root: str, name: str, sections: dict) -> dict:
    """Swap the subtree at `root` for a reference to `name`, after checking they are the same field set."""
    sub = {p[len(root):].lstrip("."): e for p, e in section.items() if p.startswith(root + ".")}
    if sub != sections[name]:
        raise SystemExit(f"{root} differs from {name}: cannot write a reference")
    kept = {p: e for p, e in section.items() if not p.startswith(root + ".")}
    kept[f"{root} -> {name}"] = None
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("crd_dir", type=Path)
    parser.add_argument("--version", required=True)
    parser.add_argument("--commit", required=True)
    args = parser.parse_args()
    spec = {}
    for kind, file in CRDS.items():
        crd = yaml.safe_load((args.crd_dir / file).read_text())
        (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        spec[kind] = fields(v1["schema"]["openAPIV3Schema"]["properties"]["spec"])
    sections = {"PodTemplateSpec": {p[len("headGroupSpec.template."):]: e for p, e in spec["RayCluster"].items()
                                    if p.startswith("headGroupSpec.template.")}}
    cluster = replace(spec["RayCluster"], "headGroupSpec.template", "PodTemplateSpec", sections)
    cluster = replace(cluster, "workerGroupSpecs[].template", "PodTemplateSpec", sections)
    sections["RayClusterSpec"] = cluster
    full_cluster = {**sections, "RayClusterSpec": spec["RayCluster"]}  # the CRD's subtree is the unreferenced one
    job = replace(spec["RayJob"], "rayClusterSpec", "RayClusterSpec", full_cluster)
    job = replace(job, "submitterPodTemplate", "PodTemplateSpec", sections)
    sections["RayJobSpec"] = job
    cron = replace(spec["RayCronJob"], "jobTemplate", "RayJobSpec", {**sections, "RayJobSpec": spec["RayJob"]})
    sections["RayCronJobSpec"] = cron
    out = [f"# KubeRay {args.version} (commit {args.commit}), CRD version ray.io/v1: the fields of each kind's `spec`.",
           "# Source: ray-operator/config/crd/bases/ray.io_{rayclusters,rayjobs,raycronjobs}.yaml at that tag,",
           "# openAPIV3Schema; written by tests/cluster/kuberay_fields.py (see its docstring for the format)."]
    for name in ("RayClusterSpec", "RayJobSpec", "RayCronJobSpec", "PodTemplateSpec"):
        out.append(f"[{name}]")
        for path, enum in sorted(sections[name].items()):
            out.append(f"{path} = {'|'.join(map(str, enum))}" if enum else path)
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
