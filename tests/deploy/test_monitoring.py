"""The monitoring in deploy/: the Prometheus alerting rules, checked and unit-tested with
promtool, the example Prometheus configuration, and the Grafana dashboard with its provisioning.

Every metric the rules and the dashboard name is checked against what the real service exports
at GET /metrics (started here with a camera worker, an alert raised and a message rejected, so
that the labelled series exist), and every InfluxQL query of the dashboard runs on the real
InfluxDB 1.x against what the service writes there."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML, with the dev extras (schemathesis)
from prometheus_client.parser import text_string_to_metric_families

from config.settings import Settings
from devices.registry import Registry
from ingest.video.monitor import health_point
from ingest.video.stats import CameraStats
from service.mingliang import create_app
from simulators.local_services import Influxd, Mosquitto
from tests.support import ROOT, Publisher, make_settings, make_token, query, serve, wait_until
from timeseries.influx import InfluxWriteClient
from timeseries.lineprotocol import encode_point
from timeseries.schema import ALERTS_OPEN, CAMERA_HEALTH, CAMERA_WORKER

PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "mingliang-rules.yml"
RULE_TESTS = PROMETHEUS / "mingliang-rules.test.yml"
PROMETHEUS_CONFIG = PROMETHEUS / "prometheus.yml"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "mingliang.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "mingliang.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "mingliang.yml"
OPERATIONS = ROOT / "docs" / "operations.md"

SITE = "kitchen-0077"
NODE = "mingliang-1:8000"
# Grafana's variables, as Grafana would fill them in.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$timeFilter": "time > now() - 1h",
    "$node": NODE,
}
PROMETHEUS_SERIES = {"up"}  # Prometheus's own, about each scrape
TARGET_LABELS = {"job", "instance"}  # added by Prometheus to every scraped series


# -- promtool ------------------------------------------------------------------------------


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool not found: install Debian's prometheus package (./mingliang test does)"
    return subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", str(RULES.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_rules_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(RULE_TESTS.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_example_prometheus_configuration_is_valid() -> None:
    """Run where the configuration is, as Prometheus resolves `rule_files` beside it."""
    result = promtool("check", "config", PROMETHEUS_CONFIG.name, cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout and RULES.name in result.stdout
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = [t for group in jobs["mingliang"]["static_configs"] for t in group["targets"]]
    assert len(targets) == 2 and jobs["mingliang"]["metrics_path"] == "/metrics"


def alerting_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_every_alert_says_how_bad_and_what_to_do_and_is_tested_and_documented() -> None:
    rules = alerting_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "an alert name is used twice"
    unit_tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {
        case["alertname"]
        for test in unit_tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    documented = OPERATIONS.read_text()
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "")), f"{name}: no `for:`"
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        annotations = rule["annotations"]
        assert annotations["summary"] and "docs/" in annotations["description"], name
        assert name in fired, f"{name}: no unit test in {RULE_TESTS.name} makes it fire"
        assert f"`{name}`" in documented, f"{name}: not in docs/operations.md"


# -- what the service exports --------------------------------------------------------------


@dataclass
class Exported:
    """The series names of a /metrics exposition, with the label names and values seen."""

    names: set[str] = field(default_factory=set)
    sampled: set[str] = field(default_factory=set)  # names with at least one sample
    labels: dict[str, set[str]] = field(default_factory=dict)
    values: dict[tuple[str, str], set[str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Exported:
        suffixes = {
            "counter": ("_total", "_created"),
            "gauge": ("",),
            "histogram": ("_bucket", "_count", "_sum", "_created"),
            "summary": ("", "_count", "_sum", "_created"),
        }
        exported = cls()
        for family in text_string_to_metric_families(text):
            for suffix in suffixes.get(family.type, ("",)):
                exported.names.add(family.name + suffix)
            for sample in family.samples:
                exported.names.add(sample.name)
                exported.sampled.add(sample.name)
                exported.labels.setdefault(sample.name, set()).update(sample.labels)
                for label, value in sample.labels.items():
                    exported.values.setdefault((sample.name, label), set()).add(value)
        return exported


_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The series a PromQL expression selects by name (functions and keywords left out)."""
    bare = _SELECTOR.sub(r"\1", expr)  # selectors without their matchers
    for pattern in (_RANGE, _GROUPING, _STRING, _NUMBER):
        bare = pattern.sub(" ", bare)
    names = set()
    for match in _IDENT.finditer(bare):
        rest = bare[match.end() :].lstrip()
        if rest.startswith("(") or match.group().lower() in _KEYWORDS:
            continue  # a function or an aggregation, or a keyword
        names.add(match.group())
    return names


def problems(expr: str, exported: Exported) -> list[str]:
    """What in `expr` the service does not export: metric names, label names, and matchers
    that select none of the values the service has."""
    found = []
    names = metric_names(expr) - PROMETHEUS_SERIES
    found += [f"{name} is not exported" for name in sorted(names - exported.names)]
    for selector in _SELECTOR.finditer(expr):
        name = selector.group(1)
        if name in PROMETHEUS_SERIES or name not in exported.names:
            continue
        for label, op, value in _MATCHER.findall(selector.group(2)):
            if label in TARGET_LABELS:
                continue
            seen = exported.values.get((name, label))
            if not seen:
                found.append(f"{name} has no label {label!r} (or no series to tell)")
            elif op in ("=", "=~"):
                for alternative in value.split("|") if op == "=~" else [value]:
                    if not any(re.fullmatch(alternative, v) for v in seen):
                        found.append(f"{name}{{{label}{op}{value!r}}}: none of {sorted(seen)}")
    if names <= exported.sampled:  # every label of these series is known
        known = set(TARGET_LABELS)
        for name in names:
            known |= exported.labels.get(name, set())
        for grouping in _GROUPING.finditer(expr):
            for label in filter(None, (part.strip() for part in grouping.group(1).split(","))):
                if label not in known:
                    found.append(f"grouping by {label!r}, a label none of {sorted(names)} has")
    return found


@pytest.fixture(scope="module")
def settings(
    tmp_path_factory: pytest.TempPathFactory, broker: Mosquitto, influxd: Influxd
) -> Settings:
    return make_settings(
        tmp_path_factory.mktemp("monitoring"),
        broker,
        influxd,
        cameras={"workers": 1, "health_every_s": 0.5},
        alerts={"counts_every_s": 1.0, "tick_s": 0.2},
    )


def points_in(settings: Settings, measurement: str) -> Callable[[], list[dict[str, Any]]]:
    return lambda: query(settings, f'SELECT * FROM "{measurement}" LIMIT 1')


@pytest.fixture(scope="module")
def service(settings: Settings, registry: Registry, broker: Mosquitto) -> Iterator[httpx.Client]:
    """The whole service with one camera worker; an alert raised and a message rejected, so
    that the series with labels exist, and what it writes to InfluxDB is there."""
    app = create_app(settings, registry.with_streams([]))
    with serve(app, make_token(settings)) as client:
        wait_until(lambda: client.get("/healthz").status_code == 200, 30, "the service up")
        device = Publisher(broker)
        device.publish(f"v1/sites/{SITE}/devices/{SITE}-cam-1/events", {"kind": "no_hat"})
        device.publish(f"v1/sites/{SITE}/devices/{SITE}-fridge-1/telemetry", b"not json")
        device.close()
        for measurement in (ALERTS_OPEN, CAMERA_WORKER):
            wait_until(points_in(settings, measurement), 30, f"the service to write {measurement}")
        wait_until(
            lambda: "mingliang_ingest_rejected_total{" in client.get("/metrics").text,
            15,
            "the rejected message counted",
        )
        yield client


@pytest.fixture(scope="module")
def exported(service: httpx.Client) -> Exported:
    response = service.get("/metrics")
    assert response.status_code == 200
    return Exported.parse(response.text)


def test_the_checker_notices_what_the_service_does_not_export(exported: Exported) -> None:
    assert "mingliang_loop_failures_total" in exported.names
    assert exported.values[("mingliang_loop_up", "loop")] >= {"telemetry-writer", "camera-worker-0"}
    fine = 'rate(mingliang_loop_failures_total{loop="alert-store"}[5m]) > 0'
    assert problems(fine, exported) == []
    assert problems("rate(mingliang_loop_failures[5m])", exported) == [
        "mingliang_loop_failures is not exported"
    ]
    assert problems('mingliang_loop_up{loop=~"camera_worker-.*"} == 0', exported)
    assert problems('mingliang_loop_up{worker="0"} == 0', exported)
    assert problems("sum by (kind) (mingliang_loop_up)", exported)
    assert problems('absent(up{job="mingliang"})', exported) == []


def test_the_rules_name_only_what_the_service_exports(exported: Exported) -> None:
    found = {rule["alert"]: problems(rule["expr"], exported) for rule in alerting_rules()}
    assert {name: p for name, p in found.items() if p} == {}
    used = set().union(*(metric_names(rule["expr"]) for rule in alerting_rules()))
    assert "mingliang_ingest_spool_bytes" in used and "up" in used


# -- the Grafana dashboard -----------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def targets(datasource_type: str) -> list[tuple[str, dict[str, Any]]]:
    """(panel title, target) for every query of the dashboard on that kind of data source."""
    return [
        (panel["title"], target)
        for panel in panels()
        for target in panel["targets"]
        if target["datasource"]["type"] == datasource_type
    ]


def filled(query_text: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        query_text = query_text.replace(variable, value)
    assert "$" not in query_text, f"a Grafana variable left in {query_text!r}"
    return query_text


def test_the_dashboard_has_its_panels_and_node_variable() -> None:
    board = dashboard()
    assert board["uid"] == "mingliang-operations" and board["schemaVersion"] >= 39
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    assert {p["type"] for p in board["panels"]} <= {"row", "timeseries", "stat"}
    for panel in panels():
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and panel["targets"], panel["title"]
    (node,) = board["templating"]["list"]
    assert node["name"] == "node" and node["type"] == "query" and node["multi"]
    assert node["query"] == 'label_values(up{job="mingliang"}, instance)'
    assert node["datasource"]["type"] == "prometheus"
    for title, target in targets("prometheus"):
        assert 'instance=~"$node"' in target["expr"], f"{title}: not filtered by $node"
    titles = " ".join(p["title"] for p in panels()).lower()
    for subject in ("telemetry", "rejected", "backlog", "spool", "open alerts", "alert changes"):
        assert subject in titles
    for subject in ("cameras live", "camera worker restarts", "loop restarts", "authentication"):
        assert subject in titles


def test_the_dashboard_names_only_what_the_service_exports(exported: Exported) -> None:
    found = {
        f"{title} {target['refId']}": problems(filled(target["expr"]), exported)
        for title, target in targets("prometheus")
    }
    assert {where: p for where, p in found.items() if p} == {}


def test_the_dashboard_prometheus_queries_parse(tmp_path: Path) -> None:
    """Each query as a recording rule: promtool parses every expression of a rules file."""
    rules = [
        {"record": f"dashboard:panel_{i}", "expr": filled(target["expr"])}
        for i, (_, target) in enumerate(targets("prometheus"))
    ]
    assert len(rules) >= 20
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def camera_health(settings: Settings) -> None:
    """Two cameras' health points, as the service's camera monitor makes them: one live, one
    whose feed is connected but has no frame yet."""
    now_ms = time.time_ns() // 1_000_000
    lines = []
    for age_ms in (60_000, 0):
        at = now_ms - age_ms
        for camera, live in ((f"{SITE}-cam-1", True), (f"{SITE}-cam-2", False)):
            stats = CameraStats(
                camera_id=camera,
                site_id=SITE,
                transport="whip",
                connected=True,
                frames_decoded=1500,
                frames_skipped=3,
                bytes_received=4_000_000,
                packets_received=1400,
                packets_lost=2,
                jitter_ms=3.5,
                width=640 if live else None,
                height=360 if live else None,
                last_frame_ms=at - 40 if live else None,
                viewers=1,
                takeovers=0,
                reconnects=0,
            )
            lines.append(encode_point(health_point(stats, None, 5.0, at)))
    client = InfluxWriteClient(settings.influx)
    try:
        client.write("\n".join(lines).encode())
    finally:
        client.close()


def test_the_dashboard_influxql_queries_run_on_what_the_service_writes(
    service: httpx.Client, settings: Settings, influxd: Influxd
) -> None:
    camera_health(settings)
    influx_targets = targets("influxdb")
    assert len(influx_targets) >= 7
    measurements = set()
    for title, target in influx_targets:
        statement = filled(target["query"])
        measurements |= set(re.findall(r'FROM "(\w+)"', statement))
        response = httpx.get(
            f"{influxd.url}/query",
            params={"db": settings.influx.database, "q": statement, "epoch": "ms"},
            timeout=30,
        )
        assert response.status_code == 200, f"{title}: {response.text}"
        body = response.json()
        assert "error" not in body, f"{title}: {body}"
        (result,) = body["results"]
        assert "error" not in result, f"{title}: {result['error']}"
        rows = [row for series in result.get("series", []) for row in series["values"]]
        values = [value for row in rows for value in row[1:]]
        assert any(v is not None for v in values), f"{title}: no data from {statement!r}"
    assert measurements == {ALERTS_OPEN, CAMERA_HEALTH, CAMERA_WORKER}


# -- provisioning --------------------------------------------------------------------------


def datasource_references(node: Any) -> Iterator[dict[str, str]]:
    if isinstance(node, dict):
        if isinstance(node.get("datasource"), dict):
            yield node["datasource"]
        for value in node.values():
            yield from datasource_references(value)
    elif isinstance(node, list):
        for item in node:
            yield from datasource_references(item)


def test_the_provisioned_datasources_are_the_ones_the_dashboard_uses() -> None:
    provisioned = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    by_uid = {source["uid"]: source for source in provisioned}
    assert {source["type"] for source in provisioned} == {"prometheus", "influxdb"}
    influx = next(s for s in provisioned if s["type"] == "influxdb")
    assert influx["jsonData"]["version"] == "InfluxQL" and influx["jsonData"]["dbName"]
    used = {
        (ref["uid"], ref["type"])
        for ref in datasource_references(dashboard())
        if ref["type"] != "grafana"  # Grafana's built-in annotations
    }
    assert used == {(uid, source["type"]) for uid, source in by_uid.items()}


def test_the_dashboard_provider_loads_dashboard_files() -> None:
    (provider,) = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert provider["type"] == "file"
    assert Path(provider["options"]["path"]).is_absolute()
    assert DASHBOARD.parent.name == "dashboards" and DASHBOARD.suffix == ".json"
