"""Prometheus (Debian's package) against the real service: the project's scrape config and rules.

promtool checks the config, the rules and the rules' unit tests (docker/prometheus/alerts.test.yml).
Then a real Prometheus scrapes a real ``csd-sr serve`` every second while a short bounded load
runs (every width, a client error, load-shedding bursts), and every dashboard query, every alert
expression and the prometheus-adapter rule are evaluated through the HTTP API: each must parse
and return data. An alert's condition returns nothing while it is quiet, so its value side is
checked for data (tests/deploy/promql.py) and the whole expression for a successful evaluation.
"""

from __future__ import annotations

import io
import math
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml
from PIL import Image

from tests.conftest import synthetic_image
from tests.deploy.conftest import (
    DOCKER_DIR,
    Service,
    ensure_system_packages,
    free_port,
    http_status,
    stop_process,
    wait_until,
)
from tests.deploy.promql import adapter_queries, alert_rules, condition_values, dashboard_targets, render_grafana

pytestmark = pytest.mark.prometheus

PROM_DIR = DOCKER_DIR / "prometheus"
DASHBOARD = DOCKER_DIR / "grafana" / "dashboards" / "csd-sr.json"
ADAPTER = DOCKER_DIR / "k8s" / "prometheus-adapter" / "values.yaml"
JOB = "csd-sr"
RATE_WINDOW = "1m"  # $__rate_interval for the dashboard: covers the whole load at a 1 s scrape


@pytest.fixture(scope="module")
def promtool() -> str:
    ensure_system_packages("prometheus", "promtool")
    return shutil.which("promtool") or "promtool"


def run_promtool(promtool: str, *args: str) -> None:
    result = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}\n{result.stderr}"


def test_promtool_check_config(promtool: str) -> None:
    run_promtool(promtool, "check", "config", str(PROM_DIR / "prometheus.yml"))


def test_promtool_check_rules(promtool: str) -> None:
    run_promtool(promtool, "check", "rules", str(PROM_DIR / "alerts.yml"))


def test_promtool_alert_unit_tests(promtool: str) -> None:
    run_promtool(promtool, "test", "rules", str(PROM_DIR / "alerts.test.yml"))


def test_every_alert_has_unit_tests() -> None:
    tests = yaml.safe_load((PROM_DIR / "alerts.test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    for rule in alert_rules(PROM_DIR / "alerts.yml"):
        mine = [c for c in cases if c["alertname"] == rule["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{rule['alert']}: no case where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{rule['alert']}: no case where it stays quiet"


def adapted_config(target: str, rules: Path) -> dict:
    """The project's prometheus.yml with only the target, the rules path and the intervals changed."""
    config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(rules)]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == JOB]
    job["static_configs"] = [{"targets": [target]}]
    return config


@pytest.fixture(scope="module")
def prometheus(promtool: str, live_service: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("prometheus")
    config = tmp / "prometheus.yml"
    config.write_text(yaml.safe_dump(adapted_config(f"127.0.0.1:{live_service.port}", PROM_DIR / "alerts.yml")))
    port = free_port()
    cmd = [
        shutil.which("prometheus") or "prometheus",
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    log = (tmp / "prometheus.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_status(f"{url}/-/ready") == 200, 60, "prometheus ready")
        wait_until(lambda: bool(query(url, f'up{{job="{JOB}"}} == 1')), 30, "service scraped")
        yield url
    finally:
        stop_process(proc)
        log.close()


def query(prom: str, expr: str) -> list[dict]:
    """An instant query; a parse or evaluation error fails with Prometheus's message."""
    resp = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10)
    body = resp.json()
    assert resp.status_code == 200 and body["status"] == "success", f"{expr}\n-> {body.get('error', resp.text)}"
    data = body["data"]
    if data["resultType"] == "scalar":
        return [{"metric": {}, "value": data["result"]}]
    return data["result"]


def png(h: int, w: int, seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(synthetic_image(h, w, seed)).save(buf, format="PNG")
    return buf.getvalue()


def put_load(url: str, widths: list[str], rounds: int = 5) -> dict[int, int]:
    """Bounded: a few rounds a second apart (so every rate sees increases between scrapes), each with
    every width, ``auto``, a bad image, a job and a burst larger than workers + queue (503s)."""
    statuses: dict[int, int] = {}
    small, large = png(24, 32, 1), png(128, 128, 2)

    def post(body: bytes, width: str) -> int:
        files = {"file": ("in.png", body, "image/png")}
        return httpx.post(f"{url}/v1/upscale", params={"width": width}, files=files, timeout=120).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        for _ in range(rounds):
            codes = [post(small, w) for w in ["auto", *widths]]
            codes.append(post(b"not an image", "auto"))
            job = httpx.post(f"{url}/v1/jobs", files={"file": ("in.png", small, "image/png")}, timeout=120)
            codes.append(job.status_code)
            codes += list(pool.map(lambda _: post(large, widths[0]), range(6)))
            for code in codes:
                statuses[code] = statuses.get(code, 0) + 1
            time.sleep(1.2)
    return statuses


@pytest.fixture(scope="module")
def loaded(prometheus: str, live_service: Service) -> str:
    model = httpx.get(f"{live_service.url}/v1/model", timeout=10).json()
    widths = [str(w) for w in sorted(model["widths"])]
    statuses = put_load(live_service.url, widths)
    assert statuses.get(200) and statuses.get(400) and statuses.get(503), statuses
    time.sleep(3)  # the last increments scraped (1 s interval) and rules evaluated
    return prometheus


def has_finite_value(result: list[dict]) -> bool:
    return any(math.isfinite(float(r["value"][1])) for r in result)


def test_every_dashboard_query_returns_data(loaded: str) -> None:
    targets = dashboard_targets(DASHBOARD)
    assert len(targets) >= 15
    empty = [
        f"{title}: {expr}"
        for title, expr in targets
        if not has_finite_value(query(loaded, render_grafana(expr, RATE_WINDOW)))
    ]
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)


def test_every_alert_expression_evaluates_with_data(loaded: str) -> None:
    rules = alert_rules(PROM_DIR / "alerts.yml")
    assert len(rules) == 5
    empty = []
    for rule in rules:
        query(loaded, rule["expr"])  # the condition itself parses and evaluates
        for value in condition_values(rule["expr"]):
            if not has_finite_value(query(loaded, value)):
                empty.append(f"{rule['alert']}: {value}")
    assert not empty, "alert values without data:\n" + "\n".join(empty)


def test_rules_loaded_and_healthy(loaded: str) -> None:
    groups = httpx.get(f"{loaded}/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = {r["name"]: r for g in groups for r in g["rules"]}
    assert set(rules) == {r["alert"] for r in alert_rules(PROM_DIR / "alerts.yml")}
    bad = {name: r.get("lastError") for name, r in rules.items() if r["health"] != "ok"}
    assert not bad, bad


def test_adapter_rule_returns_per_instance_data(loaded: str) -> None:
    for name, expr in adapter_queries(ADAPTER, JOB):
        result = query(loaded, expr)
        assert has_finite_value(result), f"{name}: {expr} returned {result}"
        assert all("instance" in r["metric"] for r in result), result
