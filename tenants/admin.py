from django.contrib import admin

from tenants.models import Domain, Tenant
from tenants.services import tenant_concurrency_set, tenant_delete


class DomainInline(admin.TabularInline):
    model = Domain
    extra = 0


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ("schema_name", "name", "concurrency", "created_at")
    search_fields = ("schema_name", "name")
    readonly_fields = ("schema_name", "created_at")
    fields = ("name", "schema_name", "concurrency", "created_at")
    inlines = [DomainInline]

    def has_add_permission(self, request):
        # Provisioning (schema, admin user, queue) goes through the API or `manage.py tenant_create`.
        return False

    def save_model(self, request, obj, form, change):
        concurrency = form.cleaned_data.get("concurrency")
        super().save_model(request, obj, form, change)
        if change and "concurrency" in form.changed_data:
            # Through the service, so running workers obey the new limit at once.
            tenant_concurrency_set(tenant=obj, workers=concurrency)

    def delete_model(self, request, obj):
        tenant_delete(tenant=obj)

    def delete_queryset(self, request, queryset):
        for tenant in queryset:
            tenant_delete(tenant=tenant)


@admin.register(Domain)
class DomainAdmin(admin.ModelAdmin):
    list_display = ("domain", "tenant", "is_primary")
    list_select_related = ("tenant",)
    search_fields = ("domain",)
