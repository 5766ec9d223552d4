from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import ValidationError
from django.template.response import TemplateResponse

from core.models import EMAIL_MAX_LENGTH
from tenants.models import MAX_TENANT_CONCURRENCY, Domain, Tenant
from tenants.queues import tenant_queue_depths
from tenants.services import tenant_admin_reset, tenant_concurrency_set, tenant_create, tenant_delete


class DomainInline(admin.TabularInline):
    model = Domain
    extra = 0


class TenantCreationForm(forms.ModelForm):
    """The admin's "Add tenant": provisions exactly what POST /api/tenants does, through `tenant_create`.

    Provisioning runs in clean(), the last step of validation, so that every refusal of the service (a
    taken or reserved slug, a weak password, a slug taken a moment ago by someone else) is shown on the
    form instead of a server error. It runs inside the admin's transaction: nothing stays if the page fails.
    """

    slug = forms.SlugField(max_length=40, help_text="Schema name and host: <slug>.<base domain>.")
    admin_email = forms.EmailField(
        max_length=EMAIL_MAX_LENGTH, label="Admin email", help_text="The tenant's first admin (its supervisor)."
    )
    admin_password = forms.CharField(label="Admin password", widget=forms.PasswordInput(render_value=True))
    concurrency = forms.IntegerField(min_value=1, max_value=MAX_TENANT_CONCURRENCY, initial=3)

    class Meta:
        model = Tenant
        fields = ("name", "concurrency")

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        try:
            self.instance = tenant_create(
                name=data["name"],
                slug=data["slug"],
                admin_email=data["admin_email"],
                admin_password=data["admin_password"],
                concurrency=data["concurrency"],
            )
        except ValidationError as error:
            fields = {"slug": "slug", "concurrency": "concurrency", "email": "admin_email", "password": "admin_password"}
            if hasattr(error, "error_dict"):
                for key, errors in error.message_dict.items():
                    self.add_error(fields.get(key), errors)
            else:
                self.add_error(None, error)
        return data


class AdminResetForm(forms.Form):
    email = forms.EmailField(max_length=EMAIL_MAX_LENGTH)
    password = forms.CharField(widget=forms.PasswordInput, strip=False)


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ("schema_name", "name", "concurrency", "queue_depth", "created_at")
    search_fields = ("schema_name", "name")
    readonly_fields = ("schema_name", "created_at")
    fields = ("name", "schema_name", "concurrency", "created_at")
    add_fields = ("name", "slug", "admin_email", "admin_password", "concurrency")
    inlines = [DomainInline]
    list_per_page = 50
    actions = ["admin_reset"]

    @admin.action(description="Reset an admin of the selected tenant…")
    def admin_reset(self, request, queryset):
        """POST /api/tenants/{id}/admin-reset from the platform admin: one tenant at a time."""
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one tenant.", messages.WARNING)
            return None
        tenant = queryset.get()
        form = AdminResetForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            try:
                user, created = tenant_admin_reset(tenant=tenant, **form.cleaned_data)
            except ValidationError as error:  # a weak password: shown on the form, nothing written
                for field, errors in error.message_dict.items():
                    form.add_error(field if field in form.fields else None, errors)
            else:
                self.message_user(request, f"{user.email} is {'now' if created else 'again'} an active admin of {tenant.name}.")
                return None
        return TemplateResponse(
            request,
            "admin/tenants/admin_reset.html",
            {**self.admin_site.each_context(request), "title": "Reset a tenant admin", "opts": self.model._meta,
             "tenant": tenant, "form": form, "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME},  # fmt: skip
        )

    def get_fields(self, request, obj=None):
        return self.add_fields if obj is None else self.fields

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def get_inlines(self, request, obj):
        return [] if obj is None else self.inlines  # provisioning makes the primary domain

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = TenantCreationForm
        return super().get_form(request, obj, **kwargs)

    def get_changelist_instance(self, request):
        # One Redis round trip for the page's queue depths, not one per row.
        changelist = super().get_changelist_instance(request)
        tenants = list(changelist.result_list)
        depths = tenant_queue_depths(schema_names=[tenant.schema_name for tenant in tenants])
        for tenant in tenants:
            tenant.queue_depth_value = depths.get(tenant.schema_name)
        return changelist

    @admin.display(description="queue depth")
    def queue_depth(self, tenant):
        return getattr(tenant, "queue_depth_value", None)

    def save_model(self, request, obj, form, change):
        if not change:
            return  # already provisioned by TenantCreationForm
        concurrency = form.cleaned_data.get("concurrency")
        super().save_model(request, obj, form, change)
        if "concurrency" in form.changed_data:
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
