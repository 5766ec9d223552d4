"""The tenant admin's index page as a dashboard, in a real browser (Playwright driving Debian's Chromium;
see core/tests/test_admin_browser.py for the server and browser fixtures). Screenshot: test-output/."""

from datetime import date, timedelta

import pytest
from django.utils import timezone
from django_tenants.utils import schema_context

from agents import services as agent_services
from core.tests.support import make_user
from conversations import services as conversation_services
from core.models import User
from core.tests.test_admin_browser import browser, log_in, page, screenshot, server  # noqa: F401  (fixtures)
from reports.tests.conftest import Clock
from reports.tests.timeline import play, recount, utc

pytestmark = pytest.mark.browser

CANVAS_STATE = """(id) => {
    const canvas = document.getElementById(id);
    const chart = Chart.getChart(canvas);
    const values = chart.data.datasets.flatMap((dataset) => dataset.data).filter((value) => value !== null);
    const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let painted = 0;
    for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted++;
    return {rendered: canvas.dataset.rendered, points: values.length, sum: values.reduce((a, b) => a + b, 0), painted};
}"""


def test_the_admin_index_charts_the_last_14_days_and_shows_the_queue_now(no_worker, make_live_tenant, server, page, monkeypatch):  # noqa: F811
    # given a tenant with two weeks of history (no worker here: drained in this process, assigned by hand)
    clock = Clock(utc(2026, 3, 2))
    monkeypatch.setattr(timezone, "now", clock.now)
    tenant = make_live_tenant("dash")
    played = play(tenant=tenant, clock=clock, seed=5, chats=40, start=utc(2026, 3, 2), span=timedelta(days=12), email_prefix="d")
    clock.at = utc(2026, 3, 15, 9)
    with schema_context(tenant.schema_name):
        conversation_services.chat_create(application=played.applications[0], customer_id="still-waiting")
        conversation_services.creations_persist(batch_size=100)
        agent_services.agent_set_online(agent=played.agents[0], is_online=False)
    admin = make_user(tenant=tenant, role=User.Role.ADMIN)
    base = server(tenant.schema_name)
    requested = []
    page.on("request", lambda request: requested.append(request.url))

    # when
    log_in(page, base, admin.email)

    # then: three charts drawn with the figures of the summary
    page.wait_for_selector("#chart-agents[data-rendered=true]")
    states = {name: page.evaluate(CANVAS_STATE, name) for name in ("chart-volume", "chart-times", "chart-agents")}
    screenshot(page, "reports-dashboard")
    expected = recount(tenant=tenant, since=date(2026, 3, 2), until=date(2026, 3, 15), tz="UTC", group_by="day")
    totals = expected["totals"]
    assert states["chart-volume"]["sum"] == totals["chats_created"] + totals["chats_resolved"] == 41 + totals["chats_resolved"]
    assert states["chart-volume"]["points"] == 2 * 14
    assert states["chart-times"]["points"] > 0
    by_agent = recount(tenant=tenant, since=date(2026, 3, 2), until=date(2026, 3, 15), tz="UTC", group_by="agent")
    assert states["chart-agents"]["sum"] == sum(row["chats_resolved"] + row["messages"] for row in by_agent["data"])
    for name, state in states.items():
        assert state["rendered"] == "true", name
        assert state["painted"] > 1000, name  # pixels actually drawn, not an empty canvas
    with schema_context(tenant.schema_name):
        waiting = conversation_services.Chat.objects.filter(status="waiting").count()
    assert page.text_content("#queue-length").strip() == str(waiting) and waiting >= 1
    assert page.text_content("#online-agents").strip() == "2"
    # the chart library comes from our own static files: nothing from another host
    assert requested and all(url.startswith(base) for url in requested), [u for u in requested if not u.startswith(base)]
    assert any(url.endswith("/static/reports/vendor/chartjs/chart.umd.min.js") for url in requested)
