from django.contrib import admin

from core.admin import tenant_admin_site
from workspace.models import CannedResponse, Label


@admin.register(Label, site=tenant_admin_site)
class LabelAdmin(admin.ModelAdmin):
    list_display = ("name", "color", "created_at")
    search_fields = ("name",)
    fields = ("name", "color", "created_at", "updated_at")
    readonly_fields = ("created_at", "updated_at")


@admin.register(CannedResponse, site=tenant_admin_site)
class CannedResponseAdmin(admin.ModelAdmin):
    list_display = ("shortcut", "short_body", "updated_at")
    search_fields = ("shortcut", "body")
    fields = ("shortcut", "body", "created_at", "updated_at")
    readonly_fields = ("created_at", "updated_at")

    @admin.display(description="body")
    def short_body(self, canned: CannedResponse) -> str:
        return canned.body[:120]
