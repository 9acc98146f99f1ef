"""cluster/ and docker/ kept honest without a cluster or a Docker engine: the launcher YAML against the schema in the
installed ray wheel, KubeRay manifests against the fields of the CRD version they name (kuberay-v1.7.0-fields.txt,
generated from the CRDs by kuberay_fields.py), images and versions against the project's pins, secrets only from
Kubernetes Secrets or env files, every entrypoint a valid s4sweep command whose sweep file passes --dry-run, and
cluster/nightly.sh's failure path (a real HTTP server receives the webhook)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator import cli

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).parent
CLUSTER, DOCKER = ROOT / "cluster", ROOT / "docker"
IMAGE_HOME = "/home/ray/s4sweep"  # docker/Dockerfile's WORKDIR: the project's layout inside the image
PINS = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
            if "==" in line and not line.startswith("#"))
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
PROJECT_IMAGE = f"s4sweep:{VERSION}-ray{PINS['ray']}"
MLFLOW_IMAGE = f"s4sweep-mlflow:{PINS['mlflow']}"
RAY_KINDS = {"RayCluster": "RayClusterSpec", "RayJob": "RayJobSpec", "RayCronJob": "RayCronJobSpec"}
OBJECT_META = {"name", "namespace", "labels", "annotations"}
SECRET_NAMES = re.compile(r"TOKEN|PASSWORD|SECRET|WEBHOOK", re.I)

def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p in sorted((CLUSTER / "kuberay").glob("*.yaml")) for d in documents(p)]


def walk(value: Any, path: str = "") -> list[tuple[str, Any]]:
    """(dotted path, value) of every node."""
    out = [(path, value)]
    if isinstance(value, dict):
        for k, v in value.items():
            out += walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for v in value:
            out += walk(v, f"{path}[]")
    return out


# --- allowed fields ---------------------------------------------------------------------------------------------


def load_fields(*files: Path) -> dict[str, dict[str, Any]]:
    """section -> {path: enum values or None, "path -> Section": "Section"}."""
    sections: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] = {}
    for file in files:
        for line in file.read_text().splitlines():
            if not line or line.startswith("#"):
                continue
            if line.startswith("["):
                current = sections.setdefault(line.strip("[]"), {})
            elif " -> " in line:
                path, target = line.split(" -> ")
                current[f"{path} ->"] = target
            else:
                path, _, enum = line.partition(" = ")
                current[path] = enum.split("|") if enum else None
    return sections


FIELDS = load_fields(HERE / "kuberay-v1.7.0-fields.txt", HERE / "kubernetes-core-fields.txt")


def sub_section(section: str, root: str, name: str) -> None:
    """Register the subtree at `root` of `section` as a section of its own (ServiceSpec, PersistentVolumeClaimSpec)."""
    FIELDS[name] = {p[len(root) + 1:]: e for p, e in FIELDS[section].items() if p.startswith(root + ".")}


sub_section("RayClusterSpec", "headGroupSpec.headService.spec", "ServiceSpec")
sub_section("PodTemplateSpec", "spec.volumes[].ephemeral.volumeClaimTemplate.spec", "PersistentVolumeClaimSpec")


def unknown_fields(value: Any, section: str, rel: str = "", at: str = "spec") -> list[str]:
    """Every key of `value` that `section` does not allow, and every value outside a listed enum."""
    allowed = FIELDS[section]
    problems = []
    if isinstance(value, dict):
        for key, sub in value.items():
            path = f"{rel}.{key}" if rel else str(key)
            if path not in allowed:
                path = f"{rel}.*" if rel else "*"
                if path not in allowed:
                    problems.append(f"{at}.{key}: not a field of {section} ({rel or 'top level'})")
                    continue
            target = allowed.get(f"{path} ->")
            problems += (unknown_fields(sub, target, "", f"{at}.{key}") if target else
                         unknown_fields(sub, section, path, f"{at}.{key}"))
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            path = f"{rel}[]"
            target = allowed.get(f"{path} ->")
            problems += (unknown_fields(sub, target, "", f"{at}[{i}]") if target else
                         unknown_fields(sub, section, path, f"{at}[{i}]"))
    elif allowed.get(rel) and str(value) not in allowed[rel]:
        problems.append(f"{at}: {value!r} is not one of {', '.join(allowed[rel])}")
    return problems


def test_the_field_lists_are_whole():
    assert {"RayClusterSpec", "RayJobSpec", "RayCronJobSpec", "PodTemplateSpec", "DeploymentSpec"} <= set(FIELDS)
    assert FIELDS["RayJobSpec"]["rayClusterSpec ->"] == "RayClusterSpec"
    assert "shutdownAfterJobFinishes" in FIELDS["RayJobSpec"] and "schedule" in FIELDS["RayCronJobSpec"]
    assert "spec.containers[].resources.limits.*" in FIELDS["PodTemplateSpec"]
    assert "ports" in FIELDS["ServiceSpec"] and "accessModes" in FIELDS["PersistentVolumeClaimSpec"]


def test_the_field_check_catches_a_typo_a_misplaced_field_and_a_bad_enum():
    spec = {"entrypoint": "s4sweep sweep smoke", "shutdownAfterJobFinish": True,
            "rayClusterSpec": {"rayVersion": "2.60.0", "authOptions": {"mode": "tokens"},
                               "headGroupSpec": {"template": {"spec": {"containers": [{"name": "h", "imag": "x"}]}},
                                                 "schedule": "0 2 * * *"}}}
    assert unknown_fields(spec, "RayJobSpec") == [
        "spec.shutdownAfterJobFinish: not a field of RayJobSpec (top level)",
        "spec.rayClusterSpec.authOptions.mode: 'tokens' is not one of disabled, token",
        "spec.rayClusterSpec.headGroupSpec.template.spec.containers[0].imag: not a field of PodTemplateSpec "
        "(spec.containers[])",
        "spec.rayClusterSpec.headGroupSpec.schedule: not a field of RayClusterSpec (headGroupSpec)"]


@pytest.mark.parametrize(("path", "doc"), manifests(), ids=lambda x: x.name if isinstance(x, Path) else x["kind"])
def test_every_manifest_carries_only_fields_of_the_api_version_it_names(path, doc):
    kinds = {**RAY_KINDS, "Deployment": "DeploymentSpec", "Service": "ServiceSpec",
             "PersistentVolumeClaim": "PersistentVolumeClaimSpec"}
    versions = {"Deployment": "apps/v1", "Service": "v1", "PersistentVolumeClaim": "v1"}
    assert doc["kind"] in kinds, f"{path.name}: no field list for kind {doc['kind']}"
    assert doc["apiVersion"] == versions.get(doc["kind"], "ray.io/v1")  # KubeRay v1.7.0 serves ray.io/v1
    assert set(doc) <= {"apiVersion", "kind", "metadata", "spec"}
    assert set(doc["metadata"]) <= OBJECT_META and doc["metadata"]["namespace"] == "s4sweep"
    assert unknown_fields(doc["spec"], kinds[doc["kind"]]) == []


# --- the launcher -----------------------------------------------------------------------------------------------


def test_the_launcher_yaml_validates_against_the_schema_in_the_ray_wheel():
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CLUSTER / "launcher" / "gpu-cluster.yaml").read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    validate_config(prepare_config(config))  # Ray's own check after filling in the AWS defaults, as `ray up` does
    assert config["head_node_type"] in config["available_node_types"]
    assert config["available_node_types"]["head"]["resources"] == {"CPU": 0}  # trials run on GPU workers only
    assert any(t["resources"].get("GPU") for t in config["available_node_types"].values())
    run_options = " ".join(config["docker"]["run_options"])
    assert "RAY_AUTH_MODE=token" in run_options and "RAY_AUTH_TOKEN=" not in run_options  # a path, never the token
    # run state in the object store, credentials from the nodes' role (never keys in the file), datasets on EFS
    assert "S4SWEEP_HOME=s3://" in run_options and "--volume /mnt/shared:/mnt/shared" in run_options
    assert "AWS_ACCESS_KEY_ID" not in run_options and "AWS_SECRET_ACCESS_KEY" not in run_options
    for name, node_type in config["available_node_types"].items():
        assert node_type["node_config"]["IamInstanceProfile"]["Arn"].startswith("arn:aws:iam::"), name
        assert node_type["node_config"]["MetadataOptions"]["HttpPutResponseHopLimit"] >= 2, name  # from a container
    assert re.search(r"MLFLOW_TRACKING_URI=https?://", run_options)


# --- images, versions, secrets ----------------------------------------------------------------------------------


def cluster_files() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p in sorted(CLUSTER.rglob("*.yaml")) for d in documents(p)]


def test_images_and_versions_match_the_projects_pins():
    images = [(p.name, v) for p, d in cluster_files() for k, v in walk(d) if k.rsplit(".", 1)[-1] == "image"]
    assert images and all(isinstance(v, str) for _, v in images)
    for name, image in images:
        assert image.rsplit("/", 1)[-1] in (PROJECT_IMAGE, MLFLOW_IMAGE), f"{name}: {image}"
    ray_versions = [v for _, d in cluster_files() for k, v in walk(d) if k.endswith("rayVersion")]
    assert len(ray_versions) == 3 and set(ray_versions) == {PINS["ray"]}
    assert f"FROM rayproject/ray:{PINS['ray']}-py{sys.version_info[0]}{sys.version_info[1]}-gpu" in dockerfile(
        DOCKER / "Dockerfile")[0]
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert compose["services"]["mlflow"]["image"] == MLFLOW_IMAGE
    assert f"-t {PROJECT_IMAGE} " in (DOCKER / "Dockerfile").read_text()  # the build command its header gives


def test_secrets_come_from_kubernetes_secrets_never_inline():
    for path, doc in cluster_files():
        assert doc.get("kind") != "Secret", f"{path.name}: create Secrets with kubectl (cluster/README.md)"
        for key, value in walk(doc):
            if key.endswith("env[]") and SECRET_NAMES.search(value["name"]):
                assert "value" not in value and "secretKeyRef" in value.get("valueFrom", {}), f"{path.name}: {value}"
    for path, doc in manifests():
        specs = [v for k, v in walk(doc) if k in ("spec", "spec.rayClusterSpec", "spec.jobTemplate.rayClusterSpec")
                 and isinstance(v, dict) and "headGroupSpec" in v]
        for spec in specs:
            assert spec["authOptions"] == {"mode": "token", "secretName": "s4sweep-ray-token"}, path.name


def test_the_ray_pods_reach_the_mlflow_service_the_runs_bucket_and_the_shared_volume():
    service = next(d for _, d in manifests() if d["kind"] == "Service")
    claim = next(d for _, d in manifests() if d["kind"] == "PersistentVolumeClaim")
    server = next(d for _, d in manifests() if d["kind"] == "Deployment")
    uri = f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    artifacts = pod_env(server)["MLFLOW_ARTIFACTS_DESTINATION"]
    envs = [v for _, d in manifests() if d["kind"] in RAY_KINDS for k, v in walk(d) if k.endswith("containers[].env")]
    assert len(envs) == 6  # head and workers of the RayCluster, the RayJob and the RayCronJob
    for env in envs:
        values = {e["name"]: e.get("value") for e in env}
        assert values["MLFLOW_TRACKING_URI"] == uri and values["S4SWEEP_HOME"].startswith("s3://")
        assert values["S4SWEEP_HOME"].split("/")[2] == artifacts.split("/")[2]  # one bucket: runs and artifacts
    # every pod that touches the bucket has its role (a service account) or, optionally, a Secret with static keys
    pods = [v for _, d in manifests() for k, v in walk(d) if k.endswith("template.spec") and "containers" in v]
    assert len(pods) == 7  # the six Ray pods and the MLflow server
    for pod in pods:
        assert pod["serviceAccountName"] == "s4sweep-storage"
        for container in pod["containers"]:
            assert {"name": "s4sweep-object-store", "optional": True} in [e.get("secretRef") for e in
                                                                           container["envFrom"]]
    claims = {v["claimName"] for _, d in manifests() for k, v in walk(d) if k.endswith("persistentVolumeClaim")}
    assert claims == {claim["metadata"]["name"]}
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


# --- entrypoints ------------------------------------------------------------------------------------------------


def entrypoints(tmp: Path) -> list[tuple[str, list[str]]]:
    """(where, argv) of every s4sweep command a job runs; a script entrypoint is run with a recording stand-in for
    s4sweep (every step succeeding), so its commands are taken as the shell really expands them."""
    found = []
    for path, doc in manifests():
        for key, value in walk(doc):
            if key.endswith("entrypoint"):
                argv = shlex.split(value)
                if argv[0] == "sh":
                    script = ROOT / Path(argv[1]).relative_to(IMAGE_HOME)
                    _, calls = run_script(script, tmp / script.stem, webhook="http://hook")
                    found += [(f"{path.name} -> {script.name}", ["s4sweep", *call]) for call in calls]
                else:
                    found.append((path.name, argv))
    return found


def run_script(script: Path, tmp: Path, *, webhook: str | None, exits: dict[str, int] | None = None,
               ) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    """Run `script` with `s4sweep` replaced by a recorder that exits with exits[subcommand] (default 0)."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    recorder = bin_dir / "s4sweep"
    recorder.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                        f"open({str(tmp / 'calls')!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
                        f"sys.exit(json.loads(os.environ['EXITS']).get(sys.argv[1], 0))\n")
    recorder.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "S4SWEEP_WEBHOOK_URL"}
    env.update(PATH=f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
               EXITS=json.dumps(exits or {}), MLFLOW_TRACKING_URI="http://mlflow:5000")
    if webhook:
        env["S4SWEEP_WEBHOOK_URL"] = webhook
    proc = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=60)
    calls = tmp / "calls"
    return proc, [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []


def pod_env(doc: dict[str, Any]) -> dict[str, str]:
    env = next(v for k, v in walk(doc) if k.endswith("containers[].env"))
    return {e["name"]: e["value"] for e in env if "value" in e}


def test_every_entrypoint_is_an_s4sweep_command_whose_sweep_file_passes_dry_run(tmp_path, monkeypatch, capsys):
    doc = next(d for _, d in manifests() if d["kind"] in ("RayJob", "RayCronJob"))
    for name, value in pod_env(doc).items():  # the pods' environment: dataset roots, S4SWEEP_HOME
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(ROOT)  # the project directory, as the image's working directory
    found = entrypoints(tmp_path)
    for where, argv in found:
        assert argv[0] == "s4sweep" and argv[1] in cli.COMMANDS, (where, argv)
        args = cli.build_parser().parse_args(argv[1:])  # exits (fails) on an unknown option
        files = [a for a in argv[2:] if a.endswith((".yaml", ".json"))]
        assert all((ROOT / f).is_file() for f in files), (where, files)
        if args.command == "sweep":
            assert cli.main([*argv[1:], "--dry-run"]) == 0, (where, capsys.readouterr().err)
            assert re.match(r"\d+ trials", capsys.readouterr().out), where
    assert [argv for _, argv in found] == [
        ["s4sweep", "sweep", "search_spaces/nightly.yaml", "--trigger", "nightly"],
        ["s4sweep", "regress", "nightly", "--baseline", "search_spaces/baselines/nightly.json", "--webhook",
         "http://hook"],
        ["s4sweep", "sweep", "smoke", "--trigger", "manual"]]


# --- cluster/nightly.sh -----------------------------------------------------------------------------------------


class Webhook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        Webhook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Any:
    server = HTTPServer(("127.0.0.1", 0), Webhook)
    Webhook.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook"
    server.shutdown()


@pytest.mark.parametrize(("exits", "steps", "text"), [
    ({}, ["sweep", "regress"], None),
    ({"regress": 1}, ["sweep", "regress"], None),  # `regress --webhook` posts its own verdict
    ({"regress": 2}, ["sweep", "regress"], "`regress` exited 2: unusable inputs"),
    ({"sweep": 1}, ["sweep"], "`sweep` exited 1: some trials failed"),
])
def test_the_nightly_script_runs_sweep_then_regress_and_reports_a_failure_to_the_webhook(exits, steps, text,
                                                                                        webhook, tmp_path):
    """The s4sweep commands are stand-ins here (the real ones are checked above); the script's control flow, exit
    status and webhook post are real."""
    proc, calls = run_script(CLUSTER / "nightly.sh", tmp_path, webhook=webhook, exits=exits)
    assert proc.returncode == max(exits.values(), default=0), proc.stderr
    assert [call[0] for call in calls] == steps
    assert calls[-1][-2:] == ["--webhook", webhook] or steps == ["sweep"]
    if text is None:
        assert Webhook.received == []
    else:
        (message,) = Webhook.received
        assert text in message["text"] and "http://mlflow:5000" in message["text"]
        assert message["exit_code"] == proc.returncode


def test_without_a_webhook_the_nightly_script_only_exits_with_the_failing_status(tmp_path):
    proc, calls = run_script(CLUSTER / "nightly.sh", tmp_path, webhook=None, exits={"regress": 1})
    assert proc.returncode == 1 and calls[1] == ["regress", "nightly", "--baseline",
                                                 "search_spaces/baselines/nightly.json"]


# --- docker/ ----------------------------------------------------------------------------------------------------


def dockerfile(path: Path) -> list[str]:
    """Instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines()
                                         if not line.lstrip().startswith("#")))
    return [line.strip() for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("name", ["Dockerfile", "mlflow.Dockerfile"])
def test_dockerfiles_copy_existing_paths_and_install_with_the_constraints(name):
    steps = dockerfile(DOCKER / name)
    assert steps[0].startswith("FROM ") and not steps[0].endswith(":latest") and ":" in steps[0]
    keep = (DOCKER / f"{name}.dockerignore").read_text().splitlines()
    copies = [shlex.split(s)[1:-1] for s in steps if s.startswith("COPY ")]
    assert copies
    for sources in copies:
        for source in (s for s in sources if not s.startswith("--")):
            assert (ROOT / source).exists(), f"{name}: COPY {source}: no such path in the build context"
            assert f"!{source}" in keep or f"!{source}/" in keep, f"{name}: {source} is left out of the context"
    installs = [i for s in steps for i in re.findall(r"pip install[^&;]*", s)]
    assert installs and all(re.search(r" -c \S*constraints\.txt", i) for i in installs), installs
    users = [s for s in steps if s.startswith("USER ")]
    assert users and users[-1] != "USER root"


def test_the_compose_stack_is_pinned_healthchecked_local_and_keeps_secrets_in_env_files():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    example = dict(line.split("=", 1) for line in (DOCKER / "secrets.env.example").read_text().splitlines()
                   if "=" in line and not line.startswith("#"))
    for name, service in compose["services"].items():
        image = service["image"]
        assert re.search(r":\d[\w.-]*$", image) and not image.endswith(":latest"), f"{name}: {image}"
        assert service["healthcheck"]["test"], name
        assert service["env_file"] == ["secrets.env"], name
        environment = service.get("environment", {})
        assert not any(SECRET_NAMES.search(k) for k in environment), f"{name}: a secret inline"
        for port in service.get("ports", []):
            assert port.startswith("${MLFLOW_BIND:-127.0.0.1}:"), f"{name}: {port}"
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "MLFLOW_BASIC_AUTH"} <= set(example)
    assert compose["services"]["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert compose["services"]["mlflow"]["build"]["dockerfile"] == "docker/mlflow.Dockerfile"
    assert "secrets.env" in (DOCKER / ".gitignore").read_text().split()
    script = (DOCKER / "mlflow-server.sh").read_text()
    assert "--backend-store-uri" not in script  # the password travels in MLFLOW_BACKEND_STORE_URI, not argv
