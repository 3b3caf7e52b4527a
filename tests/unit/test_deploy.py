"""The deployment files (docker-compose.yml, Dockerfile, .dockerignore, ops/, docs/production.md)
checked against the code they deploy. No Docker engine is needed: these tests read the files.

What drifts otherwise: a broker address in two spellings, an environment variable that is no
setting, a Prometheus port that is not the worker's, a dashboard query for a metric nobody
exports, a mounted path that does not exist, a settings table that lags the settings.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import shlex
import sys
from pathlib import Path, PurePosixPath

import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

from streams.metrics import Metrics
from streams.settings import Settings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PROMETHEUS = ROOT / "ops" / "prometheus" / "prometheus.yml"
ALERTS = ROOT / "ops" / "prometheus" / "alerts.yml"
GRAFANA = ROOT / "ops" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "streamrec.json"
DOC = ROOT / "docs" / "production.md"

STREAMREC_IMAGE_SERVICES = ("topics", "worker", "worker-gpu", "replay")
WORKERS = ("worker", "worker-gpu")


# --- helpers -----------------------------------------------------------------------------------

_VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def compose_variables(text: str) -> dict[str, str | None]:
    """``${NAME:-default}`` interpolations of the compose file: name -> default (None: none)."""
    return {m.group(1): m.group(2) for m in _VAR.finditer(text)}


def interpolate(value):
    """Compose interpolation with every variable at its default (the file as shipped)."""
    if isinstance(value, str):
        def default(m: re.Match) -> str:
            assert m.group(2) is not None, f"${{{m.group(1)}}} has no default in docker-compose.yml"
            return m.group(2)
        return _VAR.sub(default, value).replace("$$", "$")
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose() -> dict:
    return interpolate(yaml.safe_load(COMPOSE.read_text()))


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in dockerfile_instructions():
        if word == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def dockerfile_args() -> dict[str, str]:
    args = {}
    for word, rest in dockerfile_instructions():
        if word == "ARG":
            key, _, value = rest.partition("=")
            args[key] = value
    return args


def container_env(service: dict) -> dict[str, str]:
    """The STREAMREC_* environment a container of ``service`` runs with (image ENV, then compose)."""
    env = dockerfile_env() if "build" in service else {}
    env.update(env_of(service))
    return {k: v for k, v in env.items() if k.startswith("STREAMREC_")}


def worker_settings(services) -> Settings:
    return load_settings(environ=container_env(services["worker"]))


def container_port(service: dict) -> list[int]:
    """Container-side ports of a service's ``ports`` entries."""
    ports = []
    for entry in service.get("ports", []):
        ports.append(int(str(entry).rsplit(":", 1)[-1].split("/")[0]))
    return ports


def bind_mounts(service: dict) -> list[tuple[str, str]]:
    """(host path, container path) of a service's bind mounts (short syntax)."""
    out = []
    for entry in service.get("volumes", []):
        source, target = str(entry).split(":")[:2]
        if source.startswith((".", "/", "~")):
            out.append((source, target))
    return out


def host_path_for(service: dict, container_path: str) -> Path | None:
    """The repository path that a container path of ``service`` comes from (via bind mounts)."""
    wanted = PurePosixPath(container_path)
    for source, target in bind_mounts(service):
        try:
            rel = wanted.relative_to(target)
        except ValueError:
            continue
        return (COMPOSE.parent / source / rel).resolve()
    return None


def metric_sample_names() -> dict[str, str]:
    """Every sample name a worker's registry can expose -> its metric family (streams/metrics.py)."""
    names = {}
    for family in Metrics().registry.collect():
        if family.type == "counter":
            suffixes = ("_total", "_created")
        elif family.type == "histogram":
            suffixes = ("_bucket", "_sum", "_count", "_created")
        else:
            suffixes = ("",)
        for suffix in suffixes:
            names[family.name + suffix] = family.name
    return names


PROMQL_FUNCTIONS = {
    "abs", "avg", "avg_over_time", "clamp_max", "clamp_min", "count", "delta", "deriv",
    "histogram_quantile", "increase", "irate", "max", "max_over_time", "min", "min_over_time",
    "quantile", "rate", "sum", "topk", "bottomk", "vector", "scalar", "time", "absent",
}
# Series that Prometheus itself makes: per scrape target, and its alerts.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "ALERTS"}
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "by", "without", "on", "ignoring", "group_left",
                   "group_right", "offset"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (label matchers, ranges, grouping clauses removed).
    An unknown function name is an error, so that it is never taken for a metric."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", "", s)
    s = re.sub(r"\[[^\]]*\]", "", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", s):
        token = m.group(0)
        if s[m.end():].lstrip().startswith("("):
            assert token in PROMQL_FUNCTIONS, f"unknown PromQL function {token!r} in {expr!r}"
        elif token not in PROMQL_KEYWORDS:
            names.add(token)
    return names


def dashboard_exprs(dashboard: dict) -> list[str]:
    def panels(items):
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))
    return [t["expr"] for p in panels(dashboard["panels"]) for t in p.get("targets", [])]


def load_ops_module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "ops" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_promql_parser():
    assert promql_metric_names(
        'histogram_quantile(0.99, sum by (le, path) (rate(a_bucket{path="/x"}[$__rate_interval])))'
    ) == {"a_bucket"}
    assert promql_metric_names("max(b) - min(c) > 0 and on(instance) d") == {"b", "c", "d"}
    with pytest.raises(AssertionError, match="unknown PromQL function"):
        promql_metric_names("nosuchfn(a)")


# --- docker-compose.yml ------------------------------------------------------------------------

def test_compose_parses_and_has_every_service(services):
    assert set(services) >= {"kafka", "topics", "worker", "worker-gpu", "replay", "prometheus", "grafana"}
    assert services["worker-gpu"]["profiles"] == ["gpu"]
    assert services["replay"]["profiles"] == ["replay"]
    for name in ("kafka", "topics", "worker", "prometheus", "grafana"):
        assert "profiles" not in services[name], f"{name} must start with a plain `docker compose up`"


def test_every_image_is_pinned(services):
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for name, service in services.items():
        image = service.get("image")
        assert image, f"service {name} names no image"
        repo, sep, tag = image.rpartition(":")
        assert sep and "/" not in tag and tag != "latest" and re.search(r"\d", tag), \
            f"service {name}: image {image!r} is not pinned to a version tag"
        if "build" in service:
            faiss = service["build"]["args"]["FAISS"]
            assert image == f"streamrec:{version}-{faiss}", f"{name}: built image {image!r} should be " \
                f"streamrec:<pyproject version>-<FAISS build arg>"


def test_build_contexts_and_dockerfiles_exist(services):
    built = [name for name, s in services.items() if "build" in s]
    assert set(built) == set(STREAMREC_IMAGE_SERVICES)
    for name in built:
        build = services[name]["build"]
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context.is_dir(), f"{name}: build context {context} missing"
        assert (context / build.get("dockerfile", "Dockerfile")).is_file()
        assert set(build.get("args", {})) <= set(dockerfile_args()), \
            f"{name}: build args {set(build['args'])} not all declared as ARG in the Dockerfile"
        assert build["args"]["FAISS"] in ("cpu", "gpu")


def test_volumes_and_mounted_paths_exist(services, compose):
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, service in services.items():
        for entry in service.get("volumes", []):
            source, target = str(entry).split(":")[:2]
            assert target.startswith("/"), f"{name}: mount target {target!r} is not absolute"
            if source.startswith((".", "/", "~")):
                if name == "replay":
                    continue  # a user data directory: test_replay_default_is_the_demo_data
                assert (COMPOSE.parent / source).exists(), f"{name}: mounted path {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source!r} is not declared under volumes:"
                used.add(source)
    assert used == declared, f"declared but unused volumes: {declared - used}"
    kafka_mounts = dict(str(v).split(":")[:2] for v in services["kafka"]["volumes"])
    assert kafka_mounts["kafka-data"] == env_of(services["kafka"])["KAFKA_LOG_DIRS"], \
        "Kafka's log directory must be the persistent volume"


def test_replay_default_is_the_demo_data(services):
    """The replay default is the file `make demo` replays (Makefile DATA), so both stay in step."""
    makefile = (ROOT / "Makefile").read_text()
    data = re.search(r"^DATA\s*\?=\s*(\S+)", makefile, re.M).group(1)
    replay = services["replay"]
    [(source, target)] = bind_mounts(replay)
    assert target == "/data"
    command = replay["command"]
    assert command[0] == "produce"
    assert PurePosixPath(command[1]).parent == PurePosixPath("/data")
    assert Path(source) / PurePosixPath(command[1]).name == Path(data)
    assert "--rate" in command and "--limit" in command
    if not (ROOT / data).exists():
        pytest.skip(f"the demo data {data} is not beside this checkout")
    assert (ROOT / data).is_file()


def test_compose_variables_are_not_fake_settings():
    """Host-side variables with the STREAMREC_ prefix must be real settings: streamrec refuses an
    unknown STREAMREC_* variable, so a compose-only one would break commands run in that shell."""
    for name, default in compose_variables(COMPOSE.read_text()).items():
        if name.startswith("STREAMREC_"):
            assert name[len("STREAMREC_"):].lower() in Settings.model_fields, name
        assert default is not None, f"${{{name}}} needs a default"


def test_environment_names_only_real_settings_with_valid_values(services):
    fields = Settings.model_fields
    for name, service in services.items():
        env = container_env(service)
        for key in env:
            assert key[len("STREAMREC_"):].lower() in fields, f"{name}: {key} is not a setting"
        if name in STREAMREC_IMAGE_SERVICES:
            assert env, f"{name} gets no StreamRec settings"
            try:
                load_settings(environ=env)
            except SettingsError as exc:
                pytest.fail(f"{name}: {exc}")


def test_all_streamrec_services_share_the_same_settings(services):
    """Workers, topic set-up and replay agree on broker, partitions and topics."""
    common = {"bootstrap_servers", "partitions", "replication_factor", "app_id", "topic_events",
              "topic_dlq", "topic_recommendations", "topic_model_updates", "security_protocol"}
    seen = {}
    for name in STREAMREC_IMAGE_SERVICES:
        settings = load_settings(environ=container_env(services[name]))
        seen[name] = {k: getattr(settings, k) for k in common}
    assert all(v == seen["worker"] for v in seen.values()), seen


def test_broker_address_in_one_place(services):
    raw = yaml.safe_load(COMPOSE.read_text())
    bootstrap = raw["x-kafka-bootstrap"]
    for name in STREAMREC_IMAGE_SERVICES:
        assert env_of(services[name])["STREAMREC_BOOTSTRAP_SERVERS"] == bootstrap, name
    kafka = env_of(services["kafka"])
    host, port = bootstrap.rsplit(":", 1)
    assert host in ("kafka", services["kafka"].get("hostname")) and "kafka" in services
    advertised = dict(reversed(item.split("://")) for item in kafka["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert advertised[bootstrap] == kafka["KAFKA_INTER_BROKER_LISTENER_NAME"] == "PLAINTEXT"
    listeners = {name: addr for name, addr in (i.split("://") for i in kafka["KAFKA_LISTENERS"].split(","))}
    assert listeners["PLAINTEXT"].rsplit(":", 1)[1] == port
    controller_port = listeners[kafka["KAFKA_CONTROLLER_LISTENER_NAMES"]].rsplit(":", 1)[1]
    assert kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{kafka['KAFKA_NODE_ID']}@{host}:{controller_port}"
    assert "broker,controller" == kafka["KAFKA_PROCESS_ROLES"], "one KRaft node in combined mode"
    cluster_id = kafka["CLUSTER_ID"]
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16, "a KRaft cluster id is 16 bytes, base64url"
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert f"--bootstrap-server {bootstrap}" in " ".join(services["kafka"]["healthcheck"]["test"])
    # No other spelling of the broker address anywhere in the file (the 9092 vs 19092 drift).
    text = COMPOSE.read_text()
    for m in re.finditer(rf"(?<![\w/.-]){re.escape(host)}:(\d+)", text):
        assert m.group(1) in (port, controller_port), f"stray broker address {m.group(0)}"


def test_workers_scale_and_are_reachable_only_inside_the_network(services):
    settings = worker_settings(services)
    for name in WORKERS:
        worker = services[name]
        assert worker["command"] == ["worker"]
        assert "ports" not in worker, f"{name}: a fixed host port breaks --scale {name}=N"
        assert "container_name" not in worker, f"{name}: a container name breaks --scale"
        env = env_of(worker)
        assert env["STREAMREC_HTTP_HOST"] == "0.0.0.0"
        assert [int(p) for p in worker["expose"]] == [settings.http_port]
        probe = " ".join(worker["healthcheck"]["test"])
        assert f"http://127.0.0.1:{settings.http_port}/health/" in probe
        assert worker["depends_on"]["topics"]["condition"] == "service_completed_successfully"
        assert worker["depends_on"]["kafka"]["condition"] == "service_healthy"
    gpu = services["worker-gpu"]
    assert gpu["build"]["args"]["FAISS"] == "gpu"
    assert "cu" in gpu["build"]["args"]["TORCH_INDEX"].rsplit("/", 1)[1]
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "worker" in gpu["networks"]["default"]["aliases"], "Prometheus finds GPU workers as `worker`"
    assert services["worker"]["build"]["args"]["FAISS"] == "cpu"


def test_model_store_is_shared_and_table_state_is_not(services):
    settings = worker_settings(services)
    for name in WORKERS:
        mounts = dict(str(v).split(":")[:2] for v in services[name]["volumes"])
        assert mounts.get("models") == str(settings.model_dir), \
            f"{name}: the shared model store must be mounted at data_dir/models ({settings.model_dir})"
        assert not any(PurePosixPath(t) in (PurePosixPath(settings.data_dir),
                                            *PurePosixPath(settings.table_dir).parents)
                       for t in mounts.values() if t != str(settings.model_dir)), \
            "replicas share HTTP host and port, so a shared table directory would collide"


def test_topics_service_runs_the_setup_script(services):
    topics = services["topics"]
    entry = topics["entrypoint"]
    assert entry[0] == "python" and entry[1] == "/opt/streamrec/ops/create_topics.py"
    copies = [rest.split() for word, rest in dockerfile_instructions() if word == "COPY"]
    assert ["ops/create_topics.py", "./ops/create_topics.py"] in copies
    assert (ROOT / "ops" / "create_topics.py").is_file()
    assert topics["restart"] == "no"
    assert services["replay"]["depends_on"]["topics"]["condition"] == "service_completed_successfully"


# --- Prometheus --------------------------------------------------------------------------------

def test_prometheus_scrapes_every_worker(services):
    prometheus = services["prometheus"]
    config_arg = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    config_path = host_path_for(prometheus, config_arg.split("=", 1)[1])
    assert config_path == PROMETHEUS.resolve()
    config = yaml.safe_load(PROMETHEUS.read_text())
    settings = worker_settings(services)
    [job] = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics/"
    assert '@app.page("/metrics/")' in (ROOT / "streams" / "serving" / "views.py").read_text()
    [sd] = job["dns_sd_configs"]
    assert sd["names"] == ["worker"] and "worker" in services and sd["type"] == "A"
    assert sd["port"] == settings.http_port
    for rule_file in config.get("rule_files", []):
        assert host_path_for(prometheus, rule_file) == ALERTS.resolve()
    assert container_port(prometheus) == [9090]


def test_alert_rules_use_exported_metrics():
    exported = metric_sample_names()
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    assert rules
    for rule in rules:
        assert rule["alert"].startswith("StreamRec") and rule["annotations"]["summary"]
        for name in promql_metric_names(rule["expr"]):
            assert name in exported or name in PROMETHEUS_SERIES, f"alert {rule['alert']}: unknown metric {name}"


# --- Grafana -----------------------------------------------------------------------------------

def test_grafana_provisioning_points_at_existing_paths(services):
    grafana = services["grafana"]
    assert host_path_for(grafana, "/etc/grafana/provisioning") == (GRAFANA / "provisioning").resolve()
    [source] = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())[
        "datasources"]
    assert source["type"] == "prometheus"
    host_port = source["url"].removeprefix("http://")
    host, port = host_port.split(":")
    assert host in services and int(port) in container_port(services[host])
    [provider] = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "streamrec.yml").read_text())[
        "providers"]
    dashboards_dir = host_path_for(grafana, provider["options"]["path"])
    assert dashboards_dir == DASHBOARD.parent.resolve() and DASHBOARD.is_file()
    home = env_of(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_path_for(grafana, home) == DASHBOARD.resolve()
    # Every panel's data source is the provisioned one.
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"]


def test_dashboard_is_valid_and_queries_only_defined_metrics():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] == "StreamRec"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    exported = metric_sample_names()
    queried = set()
    for expr in dashboard_exprs(dashboard):
        for name in promql_metric_names(expr):
            if name in PROMETHEUS_SERIES:
                continue
            assert name in exported, f"dashboard queries {name!r}, which streams/metrics.py does not define"
            queried.add(exported[name])
        if "histogram_quantile" in expr:
            assert "_bucket" in expr and re.search(r"by \([^)]*\ble\b", expr), expr
    required = {"streamrec_events", "streamrec_dlq", "streamrec_consumer_lag",
                "streamrec_event_to_recommendation_seconds", "streamrec_http_request_seconds",
                "streamrec_model_version", "streamrec_index_version", "streamrec_training_loss",
                "streamrec_model_staleness_seconds", "streamrec_recommendations",
                "streamrec_train_dropped"}
    assert required <= queried, f"no panel for {required - queried}"
    text = DASHBOARD.read_text()
    for label in ("outcome", "reason", "source", "path"):
        assert f"by ({label})" in text or f"le, {label}" in text, f"no breakdown by {label}"
    assert "histogram_quantile(0.5," in text and "histogram_quantile(0.99," in text


# --- Dockerfile and .dockerignore --------------------------------------------------------------

def test_dockerfile(services):
    instructions = dockerfile_instructions()
    [base] = [rest for word, rest in instructions if word == "FROM"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base), base
    args = dockerfile_args()
    assert args["FAISS"] == "cpu"
    makefile_torch = re.search(r"^TORCH\s*\?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert args["TORCH"] == makefile_torch, "the image and the Makefile pin the same torch"
    assert args["TORCH_INDEX"].endswith("/whl/cpu")
    runs = " ".join(rest for word, rest in instructions if word == "RUN")
    assert '--index-url "$TORCH_INDEX"' in runs and 'pip install ".[$FAISS]"' in runs
    users = [rest for word, rest in instructions if word == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    [expose] = [rest for word, rest in instructions if word == "EXPOSE"]
    assert int(expose) == Settings.model_fields["http_port"].default
    [entry] = [rest for word, rest in instructions if word == "ENTRYPOINT"]
    assert json.loads(entry) == ["streamrec"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "streamrec" in scripts and set(tomllib.loads((ROOT / "pyproject.toml").read_text())[
        "project"]["optional-dependencies"]) >= {"cpu", "gpu"}
    load_settings(environ={k: v for k, v in dockerfile_env().items() if k.startswith("STREAMREC_")})
    for word, rest in instructions:
        if word == "COPY" and not rest.startswith("--from"):
            *sources, _ = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"


def test_dockerignore_excludes_local_state_but_not_the_sources():
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    for must in (".venv", ".git", "runs", "data", ".pytest_cache", "**/__pycache__"):
        assert must in patterns, f".dockerignore should exclude {must}"
    copied = [s for word, rest in dockerfile_instructions() if word == "COPY" for s in rest.split()[:-1]]
    for source in copied:
        top = source.split("/")[0]
        assert top not in patterns and source not in patterns, f".dockerignore excludes {source}"


# --- docs/production.md ------------------------------------------------------------------------

@pytest.mark.parametrize("doc", ["README.md", "docs/production.md"])
def test_settings_tables_are_current(doc):
    table = load_ops_module("settings_table")
    text = (ROOT / doc).read_text(encoding="utf-8")
    assert table.BEGIN in text and table.END in text
    assert table.replace_in(text) == text, \
        f"{doc}'s settings table is out of date: run `python ops/settings_table.py --write`"
    for name in Settings.model_fields:
        assert f"`STREAMREC_{name.upper()}`" in text


def test_production_doc_covers_running_scaling_gpu_security_and_watching():
    text = DOC.read_text(encoding="utf-8")
    for needle in ("docker compose up", "--scale worker=", "--profile gpu", "--profile replay",
                   "http://127.0.0.1:3000", "STREAMREC_SECURITY_PROTOCOL=SASL_SSL",
                   "STREAMREC_SASL_PASSWORD", "STREAMREC_SSL_CAFILE", "STREAMREC_HTTP_HOST", "127.0.0.1",
                   "STREAMREC_PARTITIONS", "alerts.yml"):
        assert needle in text, f"docs/production.md does not mention {needle!r}"
    rules = [r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    for alert in rules:
        assert alert in text, f"docs/production.md does not describe alert {alert}"
