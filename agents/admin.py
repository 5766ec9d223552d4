from django.contrib import admin
from django.db.models import F, Window
from django.db.models.functions import RowNumber

from agents.admin_actions import ChatActionsMixin, chats_assign
from agents.models import Agent, AllocationSettings, Assignment, QueuedChat
from agents.selectors import QUEUE_ORDERING, agent_list
from agents.services import agent_access_check, agent_set_online, agent_update, agents_ensure, assignment_run
from conversations.models import Chat
from core.admin import secret_hint, tenant_admin_site
from core.paginator import CappedCountPaginator


@admin.register(Agent, site=tenant_admin_site)
class AgentAdmin(admin.ModelAdmin):
    list_display = ("user", "name", "role", "is_online", "max_customers", "active_chats", "last_assigned_at")
    list_filter = ("is_online", "user__role")
    # The online toggle and the capacity straight on the list ("Save" goes through agent_update).
    list_editable = ("is_online", "max_customers")
    search_fields = ("user__email", "user__name")
    fields = ("user", "is_online", "max_customers", "qiscus_agent_id", "last_assigned_at")
    readonly_fields = ("user", "last_assigned_at")
    actions = ["set_online", "set_offline"]
    show_full_result_count = False

    def get_queryset(self, request):
        agents_ensure()  # staff added in the user admin appear here at once
        return agent_list()

    def has_add_permission(self, request):
        return False  # agents are users: add the user (or POST /api/agents)

    @admin.display(ordering="user__name")
    def name(self, agent):
        return agent.user.name

    @admin.display(ordering="user__role")
    def role(self, agent):
        return agent.user.role

    @admin.display(ordering="active_chats")
    def active_chats(self, agent):
        return agent.active_chats

    def save_model(self, request, obj, form, change):
        agent_access_check(agent=obj, user=request.user, fields=set(form.changed_data))
        # Through the service: going online or gaining capacity must trigger an assignment run.
        agent_update(agent=obj, is_online=obj.is_online, max_customers=obj.max_customers)
        if "qiscus_agent_id" in form.changed_data:
            Agent.objects.filter(pk=obj.pk).update(qiscus_agent_id=obj.qiscus_agent_id)

    @admin.action(description="Set selected agents online")
    def set_online(self, request, queryset):
        for agent in queryset:
            agent_access_check(agent=agent, user=request.user, fields={"is_online"})
            agent_set_online(agent=agent, is_online=True)
        self.message_user(request, f"{queryset.count()} agent(s) online.")

    @admin.action(description="Set selected agents offline")
    def set_offline(self, request, queryset):
        for agent in queryset:
            agent_access_check(agent=agent, user=request.user, fields={"is_online"})
            agent_set_online(agent=agent, is_online=False)
        self.message_user(request, f"{queryset.count()} agent(s) offline.")


@admin.register(QueuedChat, site=tenant_admin_site)
class QueuedChatAdmin(ChatActionsMixin, admin.ModelAdmin):
    """The waiting queue in serving order, with positions; resolve, run the assignment, or hand chats to an
    online agent with room ("assign to agent…", or one quick action per such agent)."""

    list_display = ("position", "number", "application", "customer_id", "messages_count", "created_at")
    list_display_links = None
    list_filter = ("application",)
    list_select_related = ("application",)
    actions = ["resolve_chats", "assign_chats", "run_assignment"]
    list_per_page = 50
    show_full_result_count = False

    def get_queryset(self, request):
        return (
            QueuedChat.objects.filter(status=Chat.Status.WAITING)
            .annotate(position=Window(RowNumber(), order_by=[F(field).asc() for field in QUEUE_ORDERING]))
            .order_by(*QUEUE_ORDERING)
        )

    @admin.display(ordering=None)
    def position(self, chat):
        return chat.position

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_actions(self, request):
        actions = super().get_actions(request)
        for agent in agent_list().filter(is_online=True):
            if agent.active_chats < agent.max_customers:
                name = f"assign_to_{agent.pk}"
                label = f"Assign to {agent.user} ({agent.active_chats}/{agent.max_customers})"
                actions[name] = (self._assign_action(agent), name, label)
        return actions

    @staticmethod
    def _assign_action(agent):
        def assign(modeladmin, request, queryset):
            chats_assign(modeladmin, request, queryset, agent=agent)

        return assign

    @admin.action(description="Run the assignment now")
    def run_assignment(self, request, queryset):
        self.message_user(request, f"{assignment_run()} chat(s) assigned.")


class AgentFilter(admin.RelatedFieldListFilter):
    """The agent filter with each agent's user in the same query (Agent.__str__ reads the user)."""

    def field_choices(self, field, request, model_admin):
        return [(agent.pk, str(agent)) for agent in Agent.objects.select_related("user").order_by("user__email")]


@admin.register(Assignment, site=tenant_admin_site)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ("chat", "agent", "reason", "assigned_at", "ended_at", "end_reason")
    list_filter = ("reason", "end_reason", ("agent", AgentFilter))
    list_select_related = ("chat__application", "agent__user")
    list_per_page = 50
    show_full_result_count = False
    paginator = CappedCountPaginator

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AllocationSettings, site=tenant_admin_site)
class AllocationSettingsAdmin(admin.ModelAdmin):
    # The full key is for Qiscus' settings page, and GET /api/integrations/qiscus hands it to admins.
    fields = ("default_max_customers", "qiscus_integration_key_hint", "qiscus_application")
    readonly_fields = ("qiscus_integration_key_hint", "qiscus_application")

    @admin.display(description="Qiscus integration key")
    def qiscus_integration_key_hint(self, obj: AllocationSettings) -> str:
        return secret_hint(obj.qiscus_integration_key) + " (the full key: GET /api/integrations/qiscus)"

    def has_add_permission(self, request):
        return not AllocationSettings.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False
