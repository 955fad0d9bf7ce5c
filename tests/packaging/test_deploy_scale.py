"""deploy/ scale-out: compose.scale.yaml (two replicas on one PostgreSQL and one Milvus
standalone behind Envoy), envoy.yaml and k8s/scale agree with each other, with the single-server files, with the CLI and
with the server settings.

No Docker engine, Envoy binary or cluster is needed: files are parsed and cross-checked
(`kubectl kustomize` renders k8s/scale when kubectl is installed). One slow test starts two
`convergent serve` processes with the compose replicas' settings on a throw-away PostgreSQL
(skipped without PostgreSQL) and checks that they act as one service.
"""

from __future__ import annotations

import copy
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from convergent.server.settings import ServerSettings

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to parse the manifests (dev extra)")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SCALE = DEPLOY / "k8s" / "scale"
BIN = Path(sys.executable).with_name("convergent")
PORT = 50051
METRICS_PORT = 9090
POSTGRES_PORT = 5432
MILVUS_PORT = 19530
DATA = "/data"
REPLICAS = 2
IMAGE = "convergent:latest"
OTHER_ENV = {"HOME"}
SERVER_LABELS = {"app.kubernetes.io/name": "convergent", "app.kubernetes.io/component": "server"}


# --------------------------------------------------------------------------- helpers
def load(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def compose() -> dict:
    (doc,) = load(DEPLOY / "compose.scale.yaml")
    return doc


def replicas() -> dict[str, dict]:
    """The convergent services of compose.scale.yaml (those running the convergent image)."""
    return {name: s for name, s in compose()["services"].items() if s.get("image") == IMAGE}


def envoy() -> dict:
    (doc,) = load(DEPLOY / "envoy.yaml")
    return doc


def envoy_cluster(name: str) -> dict:
    (cluster,) = [c for c in envoy()["static_resources"]["clusters"] if c["name"] == name]
    return cluster


def interpolate(value: str) -> str:
    """Compose's ${NAME:-default} / ${NAME-default} with NAME unset (deterministic)."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", value)


def k8s(kind: str, name: str | None = None) -> list[dict]:
    docs = []
    for path in sorted(SCALE.glob("*.yaml")):
        docs += [d for d in load(path) if d.get("kind") == kind and name in (None, d["metadata"]["name"])]
    return docs


def one(kind: str, name: str | None = None) -> dict:
    (doc,) = k8s(kind, name)
    return doc


def container(dep: dict) -> dict:
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return c


def env_values(c: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c["env"] if "value" in e}


def secret_value(ref: dict) -> str:
    """The example Secret's value a secretKeyRef points at (the real one has the same keys)."""
    key_ref = ref["valueFrom"]["secretKeyRef"]
    secret = one("Secret", key_ref["name"])
    return secret["stringData"][key_ref["key"]]


def help_flags(*command: str) -> set[str]:
    result = subprocess.run(
        [str(BIN), *command, "--help"], capture_output=True, text=True, timeout=60,
        env={**os.environ, "COLUMNS": "240", "NO_COLOR": "1", "TERM": "dumb"},
    )
    assert result.returncode == 0, result.stderr
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", result.stdout))


def flags_in(argv: list[str]) -> set[str]:
    return {a.split("=")[0] for a in argv if a.startswith("--")}


def settings_env_names() -> set[str]:
    return {f"CONVERGENT_{name.upper()}" for name in ServerSettings.model_fields}


def check_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> ServerSettings:
    """Every CONVERGENT_* name is a ServerSettings field; the values validate as one server."""
    unknown = {k for k in env if k.startswith("CONVERGENT_") and k not in settings_env_names()}
    assert not unknown, f"not ServerSettings fields: {unknown}"
    assert not {k for k in env if not k.startswith("CONVERGENT_")} - OTHER_ENV
    for key in [k for k in os.environ if k.startswith("CONVERGENT_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("CONVERGENT_"):
            monkeypatch.setenv(key, str(value))
    settings = ServerSettings()
    assert settings.port == PORT and settings.host == "0.0.0.0" and str(settings.data_dir) == DATA
    assert settings.auth_enabled() is True
    assert settings.metrics_port == METRICS_PORT
    assert settings.resolved_database_url().startswith("postgresql+psycopg://"), "psycopg 3 (the postgres extra)"
    # Galleries in a Milvus server: milvus-lite (a local file) cannot be shared by replicas.
    assert settings.gallery_backend == "milvus"
    milvus = urlsplit(settings.resolved_milvus_uri())
    assert milvus.scheme == "http" and milvus.port == MILVUS_PORT and milvus.hostname
    return settings


def published(ports: list) -> list[tuple[str, int, int]]:
    """(host ip, host port, container port) of compose's short port syntax."""
    out = []
    for spec in ports:
        parts = str(spec).split(":")
        ip = parts[0] if len(parts) == 3 else "0.0.0.0"
        out.append((ip, int(parts[-2]), int(parts[-1].split("/")[0])))
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- compose
def test_compose_scale_has_two_replicas_postgres_milvus_and_envoy():
    services = compose()["services"]
    assert set(services) == {*replicas(), "envoy", "postgres", "milvus", "milvus-etcd", "milvus-minio"}
    assert len(replicas()) == REPLICAS
    for service in replicas().values():
        context = (DEPLOY / service["build"]["context"]).resolve()
        assert context == ROOT
        assert (context / service["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
        assert service["healthcheck"]["test"] == ["CMD", "convergent", "health", "--address", f"127.0.0.1:{PORT}"]
        assert int(service["stop_grace_period"].rstrip("s")) > ServerSettings().grace_seconds
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert service["depends_on"]["milvus"]["condition"] == "service_healthy"
    assert set(services["envoy"]["depends_on"]) == set(replicas())


def test_compose_scale_replicas_share_one_definition_and_database_url(monkeypatch):
    text = (DEPLOY / "compose.scale.yaml").read_text()
    # One place: the URL (and every other setting) is written once, in the shared anchor.
    assert text.count("CONVERGENT_DATABASE_URL:") == 1
    shared = compose()["x-convergent"]
    environments = [service["environment"] for service in replicas().values()]
    assert all(env == shared["environment"] for env in environments)
    for service in replicas().values():
        assert {k: v for k, v in service.items() if k != "ports"} == shared
    env = {k: interpolate(str(v)) for k, v in shared["environment"].items()}
    check_env(env, monkeypatch)
    # The URL points at the postgres service, with its user, database and password.
    url = urlsplit(env["CONVERGENT_DATABASE_URL"])
    postgres = compose()["services"]["postgres"]["environment"]
    assert url.scheme == "postgresql" and url.hostname == "postgres" and url.port == POSTGRES_PORT
    assert url.username == postgres["POSTGRES_USER"] and url.path == f"/{postgres['POSTGRES_DB']}"
    password = re.search(r"convergent:([^@]*)@", shared["environment"]["CONVERGENT_DATABASE_URL"]).group(1)
    assert password == postgres["POSTGRES_PASSWORD"], "one variable sets both"


def test_compose_scale_milvus_standalone_with_its_etcd_and_object_store():
    services = compose()["services"]
    milvus, etcd, minio = services["milvus"], services["milvus-etcd"], services["milvus-minio"]
    # The replicas' URI names this service and the port Milvus serves.
    uri = urlsplit(compose()["x-convergent"]["environment"]["CONVERGENT_MILVUS_URI"])
    assert uri.hostname == "milvus" and uri.port == MILVUS_PORT
    assert re.fullmatch(r"milvusdb/milvus:v\d+\.\d+\.\d+", milvus["image"]), "pinned"
    assert milvus["command"] == ["milvus", "run", "standalone"]
    env = milvus["environment"]
    # etcd and MinIO: the services, on the ports they listen on.
    etcd_host, etcd_port = env["ETCD_ENDPOINTS"].split(":")
    assert etcd_host == "milvus-etcd" and f"--listen-client-urls=http://0.0.0.0:{etcd_port}" in etcd["command"]
    assert f"--advertise-client-urls=http://milvus-etcd:{etcd_port}" in etcd["command"]
    minio_host, minio_port = env["MINIO_ADDRESS"].split(":")
    assert minio_host == "milvus-minio" and minio_port == "9000"  # MinIO's default S3 port
    # Milvus logs in to MinIO with MinIO's own user and password (one variable sets both).
    assert env["MINIO_ACCESS_KEY_ID"] == minio["environment"]["MINIO_ROOT_USER"]
    assert env["MINIO_SECRET_ACCESS_KEY"] == minio["environment"]["MINIO_ROOT_PASSWORD"]
    assert "${MINIO_PASSWORD" in env["MINIO_SECRET_ACCESS_KEY"]
    assert len(interpolate(env["MINIO_SECRET_ACCESS_KEY"])) >= 8, "MinIO refuses shorter passwords"
    assert milvus["depends_on"] == {"milvus-etcd": {"condition": "service_healthy"},
                                    "milvus-minio": {"condition": "service_healthy"}}
    data_dirs = {"milvus": "/var/lib/milvus", "milvus-etcd": "/etcd", "milvus-minio": "/minio_data"}
    for name, path in data_dirs.items():
        service = services[name]
        assert "ports" not in service, f"{name} is not published"
        (volume,) = service["volumes"]
        volume_name, mount = volume.split(":")[:2]
        assert volume_name in compose()["volumes"] and mount == path, name
        assert service["healthcheck"]["test"][0] == "CMD", name
        assert service["restart"] == "unless-stopped"
    assert "--data-dir=/etcd" in etcd["command"] and minio["command"][-1] == "/minio_data"
    assert "9091/healthz" in " ".join(milvus["healthcheck"]["test"])


def test_compose_scale_keys_come_from_a_mounted_file():
    shared = compose()["x-convergent"]
    (secret,) = shared["secrets"]
    assert shared["environment"]["CONVERGENT_BOOTSTRAP_KEYS_FILE"] == f"/run/secrets/{secret}"
    assert shared["environment"]["CONVERGENT_REQUIRE_AUTH"] == "true"
    source = compose()["secrets"][secret]["file"]
    assert source.endswith(".json") and (DEPLOY / source).resolve().parent == DEPLOY
    assert "--bootstrap-out" in (DEPLOY / "compose.scale.yaml").read_text()


def test_compose_scale_postgres_official_image_volume_healthcheck():
    postgres = compose()["services"]["postgres"]
    image = postgres["image"]
    assert re.fullmatch(r"postgres:\d+[\w.-]*", image), "the official image, pinned to a major version"
    env = postgres["environment"]
    (volume,) = postgres["volumes"]
    name, mount = volume.split(":")[:2]
    assert name in compose()["volumes"], "a named volume"
    assert env["PGDATA"].startswith(mount + "/"), "PGDATA on the volume"
    test = postgres["healthcheck"]["test"]
    assert test[:2] == ["CMD", "pg_isready"]
    argv = test[1:]
    assert argv[argv.index("--username") + 1] == env["POSTGRES_USER"]
    assert argv[argv.index("--dbname") + 1] == env["POSTGRES_DB"]
    assert "ports" not in postgres, "the database is not published"


def test_compose_scale_ports_agree_between_replicas_envoy_and_the_published_port():
    services = compose()["services"]
    # Envoy publishes the one gRPC port; its listener is on that container port.
    ((ip, host_port, container_port),) = published(services["envoy"]["ports"])
    assert ip == "127.0.0.1" and host_port == PORT
    (listener,) = envoy()["static_resources"]["listeners"]
    assert listener["address"]["socket_address"]["port_value"] == container_port
    # Its upstream endpoints are exactly the replicas, on the port they serve.
    route = hcm(listener)["route_config"]["virtual_hosts"][0]["routes"][0]["route"]
    cluster = envoy_cluster(route["cluster"])
    endpoints = [e["endpoint"]["address"]["socket_address"]
                 for group in cluster["load_assignment"]["endpoints"] for e in group["lb_endpoints"]]
    assert sorted(e["address"] for e in endpoints) == sorted(replicas())
    metrics_host_ports = []
    for service in replicas().values():
        env = service["environment"]
        assert {e["port_value"] for e in endpoints} == {int(env["CONVERGENT_PORT"])}
        # Replicas publish only their metrics port (gRPC goes through Envoy).
        ((ip, host_port, container_port),) = published(service["ports"])
        assert ip == "127.0.0.1" and container_port == int(env["CONVERGENT_METRICS_PORT"]) == METRICS_PORT
        metrics_host_ports.append(host_port)
    assert len(set(metrics_host_ports)) == REPLICAS and PORT not in metrics_host_ports
    # Envoy reads deploy/envoy.yaml.
    command = services["envoy"]["command"]
    config = command[command.index("-c") + 1]
    (volume,) = services["envoy"]["volumes"]
    source, target = volume.split(":")[:2]
    assert target == config and (DEPLOY / source).resolve() == DEPLOY / "envoy.yaml"
    assert services["envoy"]["image"].startswith("envoyproxy/envoy:")


# --------------------------------------------------------------------------- envoy
def hcm(listener: dict) -> dict:
    (chain,) = listener["filter_chains"]
    (manager,) = [f for f in chain["filters"] if f["name"] == "envoy.filters.network.http_connection_manager"]
    return manager["typed_config"]


def walk_types(node: object) -> list[str]:
    if isinstance(node, dict):
        own = [node["@type"]] if "@type" in node else []
        return own + [t for v in node.values() for t in walk_types(v)]
    if isinstance(node, list):
        return [t for v in node for t in walk_types(v)]
    return []


def test_envoy_config_structure_http2_round_robin_grpc_health_checks():
    config = envoy()
    assert set(config) <= {"admin", "static_resources"}
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    assert set(config["static_resources"]) == {"listeners", "clusters"}
    for type_url in walk_types(config):
        assert re.fullmatch(r"type\.googleapis\.com/envoy\.[a-z0-9_.]+\.v3\.[A-Za-z0-9]+", type_url), type_url
    (listener,) = config["static_resources"]["listeners"]
    manager = hcm(listener)
    assert manager["@type"].endswith("http_connection_manager.v3.HttpConnectionManager")
    assert manager["codec_type"] in ("AUTO", "HTTP2") and "http2_protocol_options" in manager
    assert manager["http_filters"][-1]["name"] == "envoy.filters.http.router", "the router is the last filter"
    clusters = {c["name"] for c in config["static_resources"]["clusters"]}
    for host in manager["route_config"]["virtual_hosts"]:
        for route in host["routes"]:
            assert route["route"]["cluster"] in clusters
            # Envoy's default route timeout (15 s) would cut long fits; the gRPC deadline rules.
            assert route["route"]["timeout"] == "0s"
            assert "grpc_timeout_header_max" in route["route"]["max_stream_duration"]
            retry_on = set(route["route"].get("retry_policy", {}).get("retry_on", "").split(","))
            assert retry_on <= {"", "connect-failure", "refused-stream", "reset-before-request"}, \
                "retry only calls that never reached a replica (writes are not idempotent)"
    for cluster in config["static_resources"]["clusters"]:
        assert cluster["lb_policy"] == "ROUND_ROBIN"
        assert cluster["type"] in ("STRICT_DNS", "LOGICAL_DNS", "STATIC")
        options = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        assert options["@type"].endswith("upstreams.http.v3.HttpProtocolOptions")
        http2 = options["explicit_http_config"]["http2_protocol_options"]
        # gRPC servers answer frequent pings on idle connections with GOAWAY (too_many_pings).
        assert "connection_keepalive" not in (http2 or {})
        (check,) = cluster["health_checks"]
        assert check["grpc_health_check"].get("service_name", "") == "", "the whole server, as the probes"
        assert {"timeout", "interval", "unhealthy_threshold", "healthy_threshold"} <= set(check)


# --------------------------------------------------------------------------- CLI
def test_cli_commands_and_flags_used_by_the_scale_files_exist():
    serve_flags, health_flags = help_flags("serve"), help_flags("health")
    # The settings the scale files use as variables exist as `convergent serve` flags too.
    assert {"--database-url", "--metrics-port", "--bootstrap-keys-file", "--require-auth"} <= serve_flags
    used = [compose()["x-convergent"]["healthcheck"]["test"][1:]]
    assert all(argv[:2] == ["convergent", "health"] and flags_in(argv) <= health_flags for argv in used)
    keys_flags = help_flags("keys", "create")
    for path in [DEPLOY / "compose.scale.yaml", *SCALE.glob("*.yaml")]:
        for line in re.findall(r"^#\s+convergent (keys create [^#\n]*)", path.read_text(), re.M):
            assert flags_in(shlex.split(line)) <= keys_flags, (path.name, line)
        for line in re.findall(r"^#\s+convergent (health [^#\n]*)", path.read_text(), re.M):
            assert flags_in(shlex.split(line)) <= health_flags, (path.name, line)


def test_dockerfile_and_smoke_script_install_the_postgres_and_milvus_extras():
    tomllib = pytest.importorskip("tomllib", reason="Python >= 3.11")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("psycopg[binary]") for req in extras["postgres"])
    assert any(req.startswith("pymilvus") for req in extras["milvus"])
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    smoke = (DEPLOY / "smoke.sh").read_text()
    (image_extras,) = re.findall(r'pip install "\.\[([a-z,]+)\]"', dockerfile)
    (smoke_extras,) = re.findall(r'pip" install -q "\$WORK/src\[([a-z,]+)\]"', smoke)
    assert image_extras.split(",") == smoke_extras.split(",") == ["server", "postgres", "milvus"]


# --------------------------------------------------------------------------- k8s
def test_k8s_scale_manifests_parse_and_the_kustomization_lists_them():
    files = sorted(SCALE.glob("*.yaml"))
    for path in files:
        for doc in load(path):
            assert doc["apiVersion"] and doc["kind"], path
            if doc["kind"] != "Kustomization":
                assert doc["metadata"]["name"], path
    (kustomization,) = load(SCALE / "kustomization.yaml")
    resources = kustomization["resources"]
    assert all((SCALE / r).is_file() for r in resources), "local files only (kustomize refuses ../ here)"
    assert set(resources) == {p.name for p in files} - {"kustomization.yaml", "secret.yaml"}


def test_k8s_scale_deployment_two_replicas_rolling_update_database_url_from_a_secret(monkeypatch):
    dep = one("Deployment")
    spec, pod = dep["spec"], dep["spec"]["template"]["spec"]
    assert spec["replicas"] == REPLICAS
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    c = container(dep)
    # Every replica (one pod template) reads the URL from the same Secret key, never a literal.
    (url_ref,) = [e for e in c["env"] if e["name"] == "CONVERGENT_DATABASE_URL"]
    assert "value" not in url_ref and set(url_ref["valueFrom"]) == {"secretKeyRef"}
    assert url_ref["valueFrom"]["secretKeyRef"].get("optional", False) is False
    env = {**env_values(c), "CONVERGENT_DATABASE_URL": secret_value(url_ref)}
    check_env(env, monkeypatch)
    assert {e["name"] for e in c["env"]} == set(env)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc": PORT, "metrics": int(env["CONVERGENT_METRICS_PORT"])}
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == ports["metrics"]
    # No pod shares a ReadWriteOnce volume: the database is PostgreSQL.
    assert not [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert not k8s("PersistentVolumeClaim")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["grpc"] == {"port": PORT, "service": ""}, probe
    assert pod["enableServiceLinks"] is False


def test_k8s_scale_deployment_matches_the_base_but_for_the_scale_out_settings():
    """deployment.yaml is a copy of ../deployment.yaml plus the scale-out changes; a change to
    the base (image, probes, security, resources, keys) must be made here too."""
    (base,) = [d for d in load(DEPLOY / "k8s" / "deployment.yaml") if d["kind"] == "Deployment"]
    scale = copy.deepcopy(one("Deployment"))
    expected = copy.deepcopy(base)
    expected["spec"]["replicas"] = scale["spec"]["replicas"]
    expected["spec"]["strategy"] = scale["spec"]["strategy"]
    template, pod = expected["spec"]["template"], expected["spec"]["template"]["spec"]
    template["metadata"]["annotations"] = scale["spec"]["template"]["metadata"]["annotations"]
    pod["affinity"] = scale["spec"]["template"]["spec"]["affinity"]
    c, scale_c = container(expected), container(scale)
    c["ports"] += [p for p in scale_c["ports"] if p["name"] == "metrics"]
    added = {"CONVERGENT_DATABASE_URL", "CONVERGENT_METRICS_PORT", "CONVERGENT_GALLERY_BACKEND", "CONVERGENT_MILVUS_URI"}
    assert not added & {e["name"] for e in c["env"]}
    c["env"] = [e for e in scale_c["env"] if e["name"] in added or e in c["env"]]
    assert [e["name"] for e in c["env"]] == [e["name"] for e in scale_c["env"]]
    pod["volumes"] = [v if v["name"] != "data" else {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}}
                      for v in pod["volumes"]]
    assert scale == expected


def test_k8s_scale_services_clusterip_and_headless_for_per_call_balancing():
    dep = one("Deployment")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    container_ports = {p["name"]: p["containerPort"] for p in container(dep)["ports"]}
    (base,) = [d for d in load(DEPLOY / "k8s" / "service.yaml") if d["kind"] == "Service"]
    assert one("Service", "convergent")["spec"] == base["spec"]
    headless = one("Service", "convergent-pods")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"].items() <= labels.items()
    for port in headless["spec"]["ports"]:
        assert container_ports[port["targetPort"]] == port["port"], port
    assert {p["name"] for p in headless["spec"]["ports"]} == {"grpc", "metrics"}
    text = (SCALE / "service-pods.yaml").read_text()
    assert "dns:///convergent-pods." in text and "round_robin" in text, "documents client-side balancing"
    pdb = one("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert 0 < pdb["spec"]["minAvailable"] < dep["spec"]["replicas"]


def test_k8s_scale_postgres_statefulset_matches_the_database_secret():
    sts = one("StatefulSet", "convergent-postgres")
    service = one("Service", sts["spec"]["serviceName"])
    assert service["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    assert not SERVER_LABELS.items() <= sts["spec"]["template"]["metadata"]["labels"].items(), \
        "the server Services must not select the database pod"
    assert sts["spec"]["replicas"] == 1
    (pg,) = sts["spec"]["template"]["spec"]["containers"]
    assert re.fullmatch(r"postgres:\d+[\w.-]*", pg["image"])
    env = {e["name"]: e for e in pg["env"]}
    (template,) = sts["spec"]["volumeClaimTemplates"]
    (mount,) = pg["volumeMounts"]
    assert mount["name"] == template["metadata"]["name"] and template["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert env["PGDATA"]["value"].startswith(mount["mountPath"] + "/")
    for probe in ("readinessProbe", "livenessProbe"):
        assert pg[probe]["exec"]["command"][0] == "pg_isready", probe
    # The URL every replica gets names this Service, port, user and database, and the
    # database's password comes from the same Secret.
    (url_ref,) = [e for e in container(one("Deployment"))["env"] if e["name"] == "CONVERGENT_DATABASE_URL"]
    url = urlsplit(secret_value(url_ref))
    (service_port,) = service["spec"]["ports"]
    (pg_port,) = pg["ports"]
    assert url.scheme == "postgresql" and url.hostname == service["metadata"]["name"]
    assert url.port == service_port["port"] == pg_port["containerPort"] == POSTGRES_PORT
    assert service_port["targetPort"] in (pg_port["name"], POSTGRES_PORT)
    assert url.username == env["POSTGRES_USER"]["value"] and url.path == f"/{env['POSTGRES_DB']['value']}"
    password_ref = env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert password_ref["name"] == url_ref["valueFrom"]["secretKeyRef"]["name"]
    assert url.password == secret_value(env["POSTGRES_PASSWORD"])


def env_of(c: dict) -> dict[str, dict]:
    return {e["name"]: e for e in c["env"]}


def test_k8s_scale_milvus_standalone_etcd_and_minio_agree_with_the_deployment():
    statefulsets = {s["metadata"]["name"]: s for s in k8s("StatefulSet")}
    assert set(statefulsets) == {"convergent-postgres", "convergent-milvus", "convergent-milvus-etcd", "convergent-milvus-minio"}

    def serving(name: str) -> tuple[dict, dict, dict]:
        """(StatefulSet, its governing Service, its container) of a one-pod backing service."""
        sts = statefulsets[name]
        service = one("Service", sts["spec"]["serviceName"])
        labels = sts["spec"]["template"]["metadata"]["labels"]
        assert sts["spec"]["replicas"] == 1 and service["spec"]["selector"].items() <= labels.items()
        assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert not SERVER_LABELS.items() <= labels.items(), "the server Services must not select it"
        (c,) = sts["spec"]["template"]["spec"]["containers"]
        (template,) = sts["spec"]["volumeClaimTemplates"]
        (mount,) = c["volumeMounts"]
        assert mount["name"] == template["metadata"]["name"] and template["spec"]["accessModes"] == ["ReadWriteOnce"]
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", "not reachable from outside the cluster"
        return sts, service, c

    def service_port(service: dict, c: dict) -> int:
        (port,) = service["spec"]["ports"]
        container_ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert container_ports[port["targetPort"]] == port["port"]
        return port["port"]

    _, milvus_service, milvus = serving("convergent-milvus")
    _, etcd_service, etcd = serving("convergent-milvus-etcd")
    _, minio_service, minio = serving("convergent-milvus-minio")
    # Every replica's URI names the Milvus Service and its port.
    uri = urlsplit(env_values(container(one("Deployment")))["CONVERGENT_MILVUS_URI"])
    assert uri.hostname == milvus_service["metadata"]["name"] and uri.port == service_port(milvus_service, milvus) == MILVUS_PORT
    assert re.fullmatch(r"milvusdb/milvus:v\d+\.\d+\.\d+", milvus["image"]) and milvus["args"] == ["milvus", "run", "standalone"]
    env = env_of(milvus)
    etcd_host, etcd_port = env["ETCD_ENDPOINTS"]["value"].split(":")
    assert etcd_host == etcd_service["metadata"]["name"] and int(etcd_port) == service_port(etcd_service, etcd)
    assert f"--listen-client-urls=http://0.0.0.0:{etcd_port}" in etcd["command"]
    minio_host, minio_port = env["MINIO_ADDRESS"]["value"].split(":")
    assert minio_host == minio_service["metadata"]["name"] and int(minio_port) == service_port(minio_service, minio)
    # Milvus logs in to MinIO with the user and password MinIO is started with: one Secret.
    minio_env = env_of(minio)
    for milvus_name, minio_name in (("MINIO_ACCESS_KEY_ID", "MINIO_ROOT_USER"), ("MINIO_SECRET_ACCESS_KEY", "MINIO_ROOT_PASSWORD")):
        assert "value" not in env[milvus_name] and env[milvus_name]["valueFrom"] == minio_env[minio_name]["valueFrom"]
        assert secret_value(env[milvus_name]), milvus_name
    assert milvus["volumeMounts"][0]["mountPath"] == "/var/lib/milvus"
    assert minio["args"][-1] == minio["volumeMounts"][0]["mountPath"]
    assert f"--data-dir={etcd['volumeMounts'][0]['mountPath']}" in etcd["command"]
    for c, path in ((milvus, "/healthz"), (etcd, "/health"), (minio, "/minio/health/")):
        for probe in ("readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"]["path"].startswith(path), (c["name"], probe)


def test_k8s_scale_secret_is_a_marked_example():
    text = (SCALE / "secret.yaml").read_text()
    assert "EXAMPLE" in text.splitlines()[0]
    for secret in k8s("Secret"):
        assert secret["metadata"]["annotations"]["convergent.example/placeholder"] == "true"
        assert all("PLACEHOLDER" in value for value in secret["stringData"].values())
    # The API keys Secret the Deployment mounts is the base's (../secret.yaml).
    pod = one("Deployment")["spec"]["template"]["spec"]
    base_secrets = {d["metadata"]["name"] for d in load(DEPLOY / "k8s" / "secret.yaml")}
    assert {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v} <= base_secrets


def test_k8s_scale_kustomize_renders():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed")
    result = subprocess.run([kubectl, "kustomize", str(SCALE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["Deployment", "PodDisruptionBudget", *["Service"] * 6, *["StatefulSet"] * 4]
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    assert dep["spec"]["replicas"] == REPLICAS


# --------------------------------------------------------------------------- two replicas, one database
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_replicas_with_the_compose_settings_act_as_one_service(request, tmp_path: Path):
    """The compose replicas' environment (database URL, keys file, metrics port, auth) on two
    `convergent serve` processes and a throw-away PostgreSQL: a model registered through one
    replica is listed by the other; each serves health and /metrics; SIGTERM exits 0."""
    try:
        database = request.getfixturevalue("fresh_postgres")
    except pytest.FixtureLookupError:
        pytest.skip("no PostgreSQL fixture (tests/conftest.py fresh_postgres)")
    # The compose URL's form (a plain postgresql:// URL), pointed at the local database.
    url = "postgresql://" + database.split("://", 1)[1]
    keys = tmp_path / "convergent-keys.json"
    created = subprocess.run(
        [str(BIN), "keys", "create", "scale-test", "--role", "admin", "--bootstrap-out", str(keys)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert created.returncode == 0, created.stderr
    api_key = created.stdout.strip().splitlines()[-1].strip()
    shared = {k: interpolate(str(v)) for k, v in compose()["x-convergent"]["environment"].items()}
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("CONVERGENT_")}
    servers = []
    try:
        for i in range(REPLICAS):
            port, metrics = free_port(), free_port()
            env = {**base_env, **shared, "CONVERGENT_DATABASE_URL": url, "CONVERGENT_BOOTSTRAP_KEYS_FILE": str(keys),
                   "CONVERGENT_DATA_DIR": str(tmp_path / f"data-{i}"), "CONVERGENT_LOG_FORMAT": "text"}
            # Loopback here instead of 0.0.0.0; auth stays on (CONVERGENT_REQUIRE_AUTH=true).
            argv = [str(BIN), "serve", "--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(metrics)]
            log = open(tmp_path / f"serve-{i}.log", "w")  # noqa: SIM115
            servers.append((subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT), port, metrics, log))
        client_env = {**base_env, "CONVERGENT_API_KEY": api_key}

        def cli(*args: str, port: int) -> subprocess.CompletedProcess:
            return subprocess.run([str(BIN), *args, "--address", f"127.0.0.1:{port}"], capture_output=True,
                                  text=True, timeout=60, env=client_env)

        for process, port, _, _ in servers:
            deadline = time.monotonic() + 120
            while cli("health", port=port).returncode != 0:
                assert process.poll() is None, (tmp_path / "serve-0.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "no SERVING within 120 s"
                time.sleep(0.5)
        (_, first, _, _), (_, second, _, _) = servers
        no_key = subprocess.run([str(BIN), "models", "list", "--address", f"127.0.0.1:{second}"],
                                capture_output=True, text=True, timeout=60, env=base_env)
        assert no_key.returncode != 0, "API keys are required"
        registered = cli("models", "register", "scaled", "--dim", "4", port=first)
        assert registered.returncode == 0, registered.stderr
        listed = cli("models", "list", port=second)
        assert listed.returncode == 0 and "scaled" in listed.stdout, listed.stdout + listed.stderr
        for _, _, metrics, _ in servers:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10) as response:
                assert response.status == 200 and b"# TYPE" in response.read()
        for process, _, _, _ in servers:
            process.send_signal(signal.SIGTERM)
        for process, _, _, _ in servers:
            assert process.wait(timeout=60) == 0
    finally:
        for process, _, _, log in servers:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
            log.close()
