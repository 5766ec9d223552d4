"""End-to-end: the admin in a real browser (Playwright driving Debian's Chromium, headless).

The app is served by Django's threaded WSGI server in this process, on a free 127.0.0.1 port, against the
test database with committed data (`live_db`); Chromium maps every *.localhost host to 127.0.0.1, so a
tenant's admin is at http://<slug>.localhost:<port>/admin/. A screenshot of each final page goes to
test-output/. Run only these with `./bin/test -m browser`.
"""

import os
import threading
import uuid

import pytest
from django.conf import settings
from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
from django.core.wsgi import get_wsgi_application
from django.db import connections
from django_tenants.utils import schema_context

from agents import services as agent_services
from agents.models import Agent
from core.tests.support import make_user, PASSWORD, TEST_OUTPUT
from conversations import services as conversation_services
from conversations.models import Chat
from core.models import User
from core.services import user_delete
from tenants.models import Tenant
from tenants.services import tenant_delete

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--no-first-run",
    "--host-resolver-rules=MAP *.localhost 127.0.0.1, MAP localhost 127.0.0.1",
]  # fmt: skip


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(django_db_setup):
    """The app on a free port: returns the base URL of a host, `url(None)` for the platform's."""
    httpd = ThreadedWSGIServer(("127.0.0.1", 0), QuietHandler, allow_reuse_address=False)
    # server_close() then waits for the request threads, which close their database connections: the test
    # database can be dropped at the end of the session. (The browser, set up later, is closed first.)
    httpd.daemon_threads = False
    httpd.set_app(StaticFilesHandler(get_wsgi_application()))  # the admin's CSS and JS from the finders
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    port = httpd.server_address[1]

    def url(tenant_slug: str | None) -> str:
        host = settings.BASE_DOMAIN if tenant_slug is None else f"{tenant_slug}.{settings.BASE_DOMAIN}"
        return f"http://{host}:{port}"

    yield url
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: bin/test installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; Django would then refuse the ORM calls the
    # tests make between browser steps. They are plain synchronous calls: allow them.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
        # While Playwright's loop runs, Django keeps this thread's connections apart (asgiref treats the
        # thread as async): close those here, or the test database could not be dropped at the end.
        connections.close_all()
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    yield context.new_page()
    context.close()


def screenshot(page, name: str) -> None:
    TEST_OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(TEST_OUTPUT / f"browser-{name}.png"), full_page=True)


def log_in(page, base_url: str, email: str) -> None:
    page.goto(f"{base_url}/admin/login/?next=/admin/")
    page.fill("input[name=username]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base_url}/admin/")


def run_action(page, action: str) -> None:
    page.select_option("select[name=action]", action)
    page.click("button[name=index]")


def test_an_operator_creates_a_tenant_whose_host_then_answers(live_db, server, page):
    operator = make_user(tenant=None, role=User.Role.PLATFORM_ADMIN)
    slug = f"web-{uuid.uuid4().hex[:6]}"
    try:
        log_in(page, server(None), operator.email)
        page.click("a[href='/admin/tenants/tenant/add/']")
        page.fill("input[name=name]", "Web Shop")
        page.fill("input[name=slug]", slug)
        page.fill("input[name=admin_email]", f"boss@{slug}.test")
        page.fill("input[name=admin_password]", PASSWORD)
        page.fill("input[name=concurrency]", "2")
        page.click("input[name=_save]")
        page.wait_for_url(f"{server(None)}/admin/tenants/tenant/")
        assert "was added successfully" in page.text_content(".messagelist")
        assert slug in page.text_content("#result_list")

        # The new tenant's own host serves its admin to its first admin.
        log_in(page, server(slug), f"boss@{slug}.test")
        assert "Sociomile: tenant admin" in page.text_content("#site-name")
        screenshot(page, "tenant-created")
    finally:
        for tenant in Tenant.objects.filter(schema_name=slug):
            tenant_delete(tenant=tenant)
        user_delete(user=operator)


def test_a_supervisor_assigns_and_resolves_a_waiting_chat_then_sets_an_agent_offline(
    no_worker, make_live_tenant, server, page
):
    # No worker here (no_worker): the chat waits until the supervisor acts.
    tenant = make_live_tenant("web")
    base = server(tenant.schema_name)
    agent_email = f"ana@{tenant.schema_name}.test"
    with schema_context(tenant.schema_name):
        application = conversation_services.application_create(name="Storefront")
        number = conversation_services.chat_create(application=application, customer_id="customer-42")
        conversation_services.creations_persist(batch_size=100)
        agent = agent_services.agent_create(email=agent_email, password=PASSWORD, name="Ana", max_customers=2, is_online=True)

    log_in(page, base, f"admin@{tenant.schema_name}.test")

    # The waiting queue shows the chat; "Assign to agent…" asks for an online agent with room.
    page.goto(f"{base}/admin/agents/queuedchat/")
    row = page.locator("#result_list tbody tr", has_text="customer-42")
    row.locator("input[name=_selected_action]").check()
    run_action(page, "assign_chats")
    page.select_option("select[name=agent]", str(agent.pk))
    page.click("input[name=apply]")
    assert "1 chat(s) assigned to" in page.text_content(".messagelist")
    with schema_context(tenant.schema_name):
        assert Chat.objects.get(number=number).assigned_agent_id == agent.pk

    # The chat, now assigned, is resolved from the chats list.
    page.goto(f"{base}/admin/conversations/chat/?status__exact=assigned")
    page.locator("#result_list tbody tr", has_text="customer-42").locator("input[name=_selected_action]").check()
    run_action(page, "resolve_chats")
    assert "1 chat(s) resolved." in page.text_content(".messagelist")
    with schema_context(tenant.schema_name):
        assert Chat.objects.get(number=number).status == Chat.Status.RESOLVED
    page.goto(f"{base}/admin/conversations/chat/?status__exact=resolved")
    assert "customer-42" in page.text_content("#result_list")
    screenshot(page, "chat-resolved")

    # The agent goes offline with the list's online toggle.
    page.goto(f"{base}/admin/agents/agent/")
    page.locator("#result_list tbody tr", has_text=agent_email).locator("input[name$='-is_online']").uncheck()
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist")
    with schema_context(tenant.schema_name):
        assert Agent.objects.get(pk=agent.pk).is_online is False
    screenshot(page, "agent-offline")
