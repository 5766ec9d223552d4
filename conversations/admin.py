from django.contrib import admin

from conversations.models import InboundEvent
from core.admin import tenant_admin_site


@admin.register(InboundEvent, site=tenant_admin_site)
class InboundEventAdmin(admin.ModelAdmin):
    """The tenant's event log; `dead` events (retries exhausted) are parked here with their last error."""

    list_display = ("id", "status", "attempts", "created_at", "updated_at", "short_error")
    list_filter = ("status",)
    search_fields = ("id", "last_error", "raw_payload")
    date_hierarchy = "created_at"
    ordering = ("-created_at", "-id")
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
