"""The Grafana dashboard (deploy/grafana/dashboards/sociomile.json) over /metrics: it parses, every series it queries
is exported, and its panels rendered in a real browser from a real scrape (a screenshot in test-output/).

Grafana and Prometheus are not run here (no Docker; neither is in Debian's archive on this machine): the browser
renders each panel's query evaluated on one scrape (deploy/grafana/preview/preview.js), which checks the
dashboard's metric names, label matchers and groupings against what the app exports, not Grafana's own drawing.
"""

import http.client
import json
import re

import pytest

from core.tests.support import ROOT, TEST_OUTPUT
from core.tests.test_admin_browser import browser  # noqa: F401  (the fixture: Chromium under Playwright)
from tenants.metrics import (
    http_server_error_count,
    tenant_assignment_waits_observe,
    tenant_deliveries_count,
    tenant_metrics_forget,
    tenant_task_observe,
)

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "sociomile.json"
PREVIEW_JS = ROOT / "deploy" / "grafana" / "preview" / "preview.js"
CHART_JS = ROOT / "reports" / "static" / "reports" / "vendor" / "chartjs" / "chart.umd.min.js"
METRICS_TOKEN = "dashboard-test-scrape-token"


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _queries(dashboard: dict) -> list[str]:
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    queries += [variable["definition"] for variable in dashboard["templating"]["list"] if variable["type"] == "query"]
    return queries


def _activity(*schema_names: str) -> None:
    """What workers and web processes record, by the same functions, for each tenant (and one platform 5xx)."""
    for index, name in enumerate(schema_names, start=1):
        tenant_metrics_forget(schema_name=name)
        for task, seconds, wait in (("conversations.tasks.creations_persist_task", 0.04 * index, 0.02),
                                    ("agents.tasks.assignment_run_task", 0.3, 0.8 * index)):  # fmt: skip
            tenant_task_observe(schema_name=name, task_name=task, outcome="succeeded", seconds=seconds, wait_seconds=wait)
        tenant_task_observe(schema_name=name, task_name="scheduler.tasks.outbound_send_due_task", outcome="failed",
                            seconds=1.5, wait_seconds=0.1)  # fmt: skip
        tenant_assignment_waits_observe(schema_name=name, waits=[3.0 * index, 40.0, 200.0 * index])
        tenant_deliveries_count(schema_name=name, channel="outbound", outcomes={"sent": 10 * index, "retrying": 2, "failed": 1})
        tenant_deliveries_count(schema_name=name, channel="webhook", outcomes={"succeeded": 7 * index, "retrying": 1, "dead": index - 1})
        http_server_error_count(schema_name=name)
    tenant_metrics_forget(schema_name="public")
    http_server_error_count(schema_name="public")


def _exported_names(text: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_dashboard_parses_and_every_series_it_queries_is_in_metrics(platform_api, tenant_a, tenant_b):
    # given activity of every kind recorded for the tenants
    _activity(tenant_a.schema_name, tenant_b.schema_name)
    dashboard = _dashboard()

    # when Prometheus would scrape
    response = platform_api.get("/metrics")

    # then each name a panel or the tenant variable queries is exported, with the labels the panels group by
    assert response.status_code == 200
    text = response.content.decode()
    exported = _exported_names(text)
    queried = {name for query in _queries(dashboard) for name in re.findall(r"\bsociomile_[a-z_]+", query)}
    assert len(dashboard["panels"]) == 9
    assert queried and queried <= exported, f"queried but not exported: {sorted(queried - exported)}"
    for query in _queries(dashboard):
        for label in re.findall(r"by \(([^)]*)\)", query):
            names = re.findall(r"\bsociomile_[a-z_]+", query)
            for name in names:
                line = next(line for line in text.splitlines() if line.startswith(name + "{"))
                assert all(f'{part.strip()}="' in line for part in label.split(",")), (query, line)
    assert {panel["datasource"]["uid"] for panel in dashboard["panels"]} == {"${datasource}"}
    for name in (tenant_a.schema_name, tenant_b.schema_name, "public"):
        tenant_metrics_forget(schema_name=name)


@pytest.mark.browser
def test_dashboard_panels_render_in_a_browser_from_a_scrape_of_gunicorn(browser, tenant_a, tenant_b, monkeypatch):  # noqa: F811
    from core.tests.live_server import LiveServer

    # given a gunicorn serving /metrics to the scraper's token, and activity recorded for two tenants
    monkeypatch.setenv("METRICS_BEARER_TOKEN", METRICS_TOKEN)
    server = LiveServer(name="dashboard", threads=2)
    try:
        _activity(tenant_a.schema_name, tenant_b.schema_name)

        # when it is scraped as deploy/prometheus/prometheus.yml does: the web server as the HTTP proxy of
        # http://localhost/metrics (the platform host: Prometheus cannot set a Host header)
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        connection.request("GET", "http://localhost/metrics",
                           headers={"Host": "localhost", "Authorization": f"Bearer {METRICS_TOKEN}"})  # fmt: skip
        response = connection.getresponse()
        scraped = response.read().decode()
        connection.close()
    finally:
        server.stop()
    assert response.status == 200, scraped[:500]

    # and the dashboard's panels are drawn from that scrape in Chromium
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = context.new_page()
        page.set_content(
            "<!doctype html><html><head><style>body{font-family:sans-serif;margin:16px}"
            ".grid{display:grid;grid-template-columns:1fr 1fr;gap:16px}.panel{border:1px solid #ddd;padding:8px}"
            ".wide{grid-column:1 / span 2}h2{font-size:15px;margin:0 0 6px}code{font-size:10px;color:#555}"
            "</style></head><body><div id='dashboard'></div></body></html>"
        )
        page.add_script_tag(path=str(CHART_JS))
        page.add_script_tag(path=str(PREVIEW_JS))
        rendered = page.evaluate(
            "([dashboard, text]) => renderDashboard(dashboard, text, document.getElementById('dashboard'))",
            [_dashboard(), scraped],
        )
        TEST_OUTPUT.mkdir(exist_ok=True)
        page.screenshot(path=str(TEST_OUTPUT / "dashboard-grafana-preview.png"), full_page=True)
    finally:
        context.close()

    # then every panel has data for both tenants, with the figures the activity implies
    by_title = {panel["title"]: {point["label"]: point["value"] for point in panel["points"]} for panel in rendered}
    alpha, beta = tenant_a.schema_name, tenant_b.schema_name
    assert len(by_title) == 9 and all(by_title.values()), by_title
    assert by_title["Queue depth per tenant"][alpha] == 0
    assert by_title["Outbound messages by outcome"][f"{beta} sent"] == 20
    assert by_title["Webhook deliveries by outcome"][f"{beta} dead"] == 1
    assert by_title["HTTP 5xx answers"] == {alpha: 1, beta: 1, "public": 1}
    assert by_title["Finished tasks by outcome"][f"{alpha} failed"] == 1
    assert 40 < by_title["Assignment wait p95 per tenant"][alpha] <= 300
    for name in (alpha, beta, "public"):
        tenant_metrics_forget(schema_name=name)
