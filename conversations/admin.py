from django.contrib import admin

from conversations.models import Application, Chat, InboundEvent, Message
from core.admin import tenant_admin_site


@admin.register(Application, site=tenant_admin_site)
class ApplicationAdmin(admin.ModelAdmin):
    list_display = ("name", "token", "chats_count", "created_at")
    search_fields = ("name", "token")
    readonly_fields = ("token", "webhook_secret", "chats_count", "created_at", "updated_at")
    fields = ("name", "token", "webhook_secret", "chats_count", "created_at", "updated_at")


class MessageInline(admin.TabularInline):
    model = Message
    fields = ("number", "sender", "author", "body", "created_at")
    readonly_fields = ("number", "sender", "author", "created_at")
    ordering = ("number",)
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None):
        # Messages are created through the API, which numbers them.
        return False


@admin.register(Chat, site=tenant_admin_site)
class ChatAdmin(admin.ModelAdmin):
    list_display = ("number", "application", "status", "customer_id", "assigned_agent", "messages_count", "created_at")
    list_filter = ("status", "application", "assigned_agent")
    list_select_related = ("application", "assigned_agent")
    search_fields = ("customer_id",)
    readonly_fields = ("application", "number", "messages_count", "created_at", "updated_at", "assigned_at", "resolved_at")
    inlines = [MessageInline]
    list_per_page = 50
    show_full_result_count = False

    def has_add_permission(self, request):
        return False


@admin.register(InboundEvent, site=tenant_admin_site)
class InboundEventAdmin(admin.ModelAdmin):
    list_display = ("id", "created_at", "persisted_at")
    readonly_fields = ("id", "payload", "created_at", "persisted_at")
    show_full_result_count = False

    def has_add_permission(self, request):
        return False
