from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef, Q

from agents.admin_actions import ChatActionsMixin
from conversations.access import message_access_check, ticket_access_check
from conversations.models import Application, Chat, InboundEvent, Message, Ticket
from conversations.services import ticket_status_set
from core.admin import secret_hint, tenant_admin_site
from core.paginator import CappedCountPaginator
from workspace.selectors import chats_label_names_annotate


@admin.register(Application, site=tenant_admin_site)
class ApplicationAdmin(admin.ModelAdmin):
    list_display = ("name", "token", "chats_count", "created_at")
    search_fields = ("name", "token")
    # The webhook secret is shown once, by POST /api/applications; here only its last characters.
    readonly_fields = ("token", "webhook_secret_hint", "chats_count", "created_at", "updated_at")
    fields = ("name", "token", "webhook_secret_hint", "chats_count", "created_at", "updated_at")

    @admin.display(description="webhook secret")
    def webhook_secret_hint(self, obj: Application) -> str:
        return secret_hint(obj.webhook_secret)


class MessageInline(admin.TabularInline):
    model = Message
    fields = ("number", "sender", "private_note", "author", "body", "attachments", "created_at")
    readonly_fields = ("number", "sender", "private_note", "author", "attachments", "created_at")
    ordering = ("number",)
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None):
        # Messages are created through the API, which numbers them.
        return False

    @admin.display(description="private note", boolean=True)
    def private_note(self, message: Message) -> bool:
        # Staff-only (PRODUCT.md, "Agent workspace"): marked so nobody pastes one to the customer.
        return message.is_private

    def get_formset(self, request, obj=None, **kwargs):
        # A body is editable only where the API would let this user edit it (conversations.access): an agent's
        # message, not a customer's. A disabled field ignores whatever a forged POST sends for it.
        formset = super().get_formset(request, obj, **kwargs)
        user = request.user

        class MessageForm(formset.form):
            def __init__(self, *args, **form_kwargs):
                super().__init__(*args, **form_kwargs)
                if "body" in self.fields and self.instance.pk:
                    try:
                        message_access_check(message=self.instance, user=user)
                    except PermissionDenied:
                        self.fields["body"].disabled = True

        formset.form = MessageForm
        return formset


@admin.register(Chat, site=tenant_admin_site)
class ChatAdmin(ChatActionsMixin, admin.ModelAdmin):
    """Chats at scale: no date hierarchy (its year list scans the whole table; the date filter does not),
    counts capped by CappedCountPaginator, and a message-text search through EXISTS, not a join."""

    list_display = ("number", "application", "status", "customer_id", "assigned_agent", "messages_count", "labels", "created_at")
    list_filter = ("status", "application", "assigned_agent", "chat_labels__label", ("created_at", admin.DateFieldListFilter))
    list_select_related = ("application", "assigned_agent")
    search_fields = ("customer_id",)
    search_help_text = "Customer id (exact), or words of a message."
    ordering = ("-created_at", "-id")
    # Status and agent change only through the actions (chat_resolve, chat_assign): a plain form save would skip
    # the agent's active_chats count and its capacity check, and serve no waiting chat after a resolve.
    readonly_fields = (
        "application", "number", "status", "assigned_agent", "messages_count",
        "created_at", "updated_at", "assigned_at", "resolved_at", "labels",
    )  # fmt: skip
    inlines = [MessageInline]
    actions = ["resolve_chats", "assign_chats"]
    list_per_page = 50
    show_full_result_count = False
    paginator = CappedCountPaginator

    def get_queryset(self, request):
        # The labels of a page's chats in the page's own query (workspace.selectors).
        return chats_label_names_annotate(chats=super().get_queryset(request))

    @admin.display(description="labels")
    def labels(self, chat: Chat) -> str:
        return ", ".join(chat.label_names or [])

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        in_messages = Exists(Message.objects.filter(chat_id=OuterRef("pk"), body__icontains=term))
        return queryset.filter(Q(customer_id=term) | in_messages), False

    def has_add_permission(self, request):
        return False


@admin.register(InboundEvent, site=tenant_admin_site)
class InboundEventAdmin(admin.ModelAdmin):
    """The tenant's event log; `dead` events (retries exhausted) are parked here with their last error."""

    list_display = ("id", "status", "attempts", "created_at", "updated_at", "short_error")
    list_filter = ("status", ("created_at", admin.DateFieldListFilter))
    search_fields = ("id", "last_error", "raw_payload")
    ordering = ("-created_at", "-id")
    list_per_page = 50
    show_full_result_count = False
    paginator = CappedCountPaginator
    fields = (
        "id", "status", "attempts", "created_at", "persisted_at", "updated_at", "payload", "raw_payload", "last_error",
    )  # fmt: skip
    readonly_fields = fields

    @admin.display(description="last error")
    def short_error(self, event: InboundEvent) -> str:
        return event.last_error[:120]

    def has_add_permission(self, request):
        return False  # events arrive through the platform API and the tenant's queue only

    def has_change_permission(self, request, obj=None):
        return False


def _ticket_status_action(status: str, label: str):
    def action(modeladmin, request, queryset):
        for ticket in queryset:
            ticket_access_check(ticket=ticket, user=request.user)
            ticket_status_set(ticket=ticket, status=status)
        modeladmin.message_user(request, f"{len(queryset)} ticket(s) marked {label.lower()}.")

    action.__name__ = f"mark_{status}"
    action.short_description = f"Mark selected tickets {label.lower()}"
    return action


@admin.register(Ticket, site=tenant_admin_site)
class TicketAdmin(admin.ModelAdmin):
    list_display = ("id", "title", "status", "priority", "chat", "assigned_agent", "created_by", "created_at", "updated_at")
    list_filter = ("status", "priority", "assigned_agent", "chat__application", ("created_at", admin.DateFieldListFilter))
    list_select_related = ("chat__application", "assigned_agent", "created_by")
    search_fields = ("title", "description", "chat__customer_id")
    readonly_fields = ("chat", "created_by", "created_at", "updated_at")
    fields = ("chat", "title", "description", "status", "priority", "assigned_agent", "created_by", "created_at", "updated_at")
    raw_id_fields = ("assigned_agent",)
    actions = [_ticket_status_action(value, label) for value, label in Ticket.Status.choices]
    list_per_page = 50
    show_full_result_count = False
    paginator = CappedCountPaginator

    def has_add_permission(self, request):
        # Tickets are opened by escalating a chat (POST .../escalate), which ties them to it.
        return False

    def save_model(self, request, obj, form, change):
        ticket_access_check(ticket=obj, user=request.user)
        super().save_model(request, obj, form, change)
