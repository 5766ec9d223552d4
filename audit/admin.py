"""The audit log in the tenant admin: read-only (no add, change or delete), filtered by action and time."""

from django.contrib import admin

from audit.models import AuditEntry
from core.admin import tenant_admin_site
from core.paginator import CappedCountPaginator


@admin.register(AuditEntry, site=tenant_admin_site)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ("at", "actor", "action", "target")
    list_filter = ("action", ("at", admin.DateFieldListFilter))
    search_fields = ("=actor", "=target", "=action")
    date_hierarchy = "at"
    paginator = CappedCountPaginator
    show_full_result_count = False
    readonly_fields = ("at", "actor", "actor_user_id", "action", "target", "changes")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
