from django.conf import settings
from django.core.management.base import BaseCommand
from django_tenants.utils import get_public_schema_name, schema_context

from agents.services import agent_create
from conversations.models import Application
from conversations.services import application_create
from core.models import User
from core.services import user_create, user_token_get_or_create
from tenants.models import Tenant
from tenants.services import tenant_create

PLATFORM_ADMIN = ("admin@sociomile.local", "sociomile-admin-password")
DEMO_SLUG = "demo"
DEMO_ADMIN = ("admin@demo.local", "demo-admin-password")
DEMO_AGENTS = [("agent1@demo.local", "Ada Agent"), ("agent2@demo.local", "Bo Agent"), ("agent3@demo.local", "Cy Agent")]
DEMO_AGENT_PASSWORD = "demo-agent-password"


def _user(*, email: str, password: str, role: str, name: str = "") -> User:
    return User.objects.filter(email=email).first() or user_create(email=email, password=password, role=role, name=name)


class Command(BaseCommand):
    help = "Creates (once) a platform admin and a `demo` tenant with an admin and three agents; prints how to use them."

    def add_arguments(self, parser):
        parser.add_argument("--port", default="8000", help="The port the web server listens on, for the printed URLs.")

    def handle(self, *args, **options):
        with schema_context(get_public_schema_name()):
            platform_admin = _user(email=PLATFORM_ADMIN[0], password=PLATFORM_ADMIN[1], role=User.Role.PLATFORM_ADMIN)
            platform_token = user_token_get_or_create(user=platform_admin).key
        tenant = Tenant.objects.filter(schema_name=DEMO_SLUG).first() or tenant_create(
            name="Demo", slug=DEMO_SLUG, admin_email=DEMO_ADMIN[0], admin_password=DEMO_ADMIN[1]
        )
        with schema_context(tenant.schema_name):
            demo_admin = User.objects.get(email=DEMO_ADMIN[0])
            admin_token = user_token_get_or_create(user=demo_admin).key
            agent_tokens = []
            for email, name in DEMO_AGENTS:
                # Online from the start, so the demo's waiting chats are assigned at once.
                user = User.objects.filter(email=email).first() or agent_create(
                    email=email, password=DEMO_AGENT_PASSWORD, name=name, is_online=True
                ).user
                agent_tokens.append((email, user_token_get_or_create(user=user).key))
            application = Application.objects.first() or application_create(name="Demo website chat")

        port = options["port"]
        platform_url = f"http://{settings.BASE_DOMAIN}:{port}"
        tenant_url = f"http://{DEMO_SLUG}.{settings.BASE_DOMAIN}:{port}"
        chats_url = f"{tenant_url}/api/applications/{application.token}/chats"
        lines = [
            "",
            "Sociomile is up.",
            "",
            f"Platform host   {platform_url}",
            f"  API docs      {platform_url}/docs/",
            f"  Django admin  {platform_url}/admin/   {PLATFORM_ADMIN[0]} / {PLATFORM_ADMIN[1]}",
            f"  API token     {platform_token}",
            "",
            f"Demo tenant     {tenant_url}",
            f"  API docs      {tenant_url}/docs/",
            f"  Django admin  {tenant_url}/admin/   {DEMO_ADMIN[0]} / {DEMO_ADMIN[1]}",
            f"  admin token   {admin_token}",
            *[f"  agent token   {token}   ({email} / {DEMO_AGENT_PASSWORD})" for email, token in agent_tokens],
            f"  application   {application.token}   (webhook secret {application.webhook_secret})",
            "",
            "Try:",
            f"  curl {tenant_url}/health",
            f"  curl -X POST -H 'Content-Type: application/json' -d '{{\"customer_id\": \"c1\"}}' {chats_url}",
            f"  curl -X POST -H 'Content-Type: application/json' -d '{{\"body\": \"Hello!\"}}' {chats_url}/1/messages",
            f"  curl {chats_url}/1/messages",
            f"  curl -H 'Authorization: Token {platform_token}' {platform_url}/api/tenants",
            "",
        ]
        self.stdout.write("\n".join(lines))
