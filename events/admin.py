"""The tenant admin's view of outgoing webhooks: endpoints (secret shown once), deliveries with their
attempts, redelivery. Every change goes through the services, with the API's checks."""

from django import forms
from django.contrib import admin, messages

from core.admin import secret_hint, tenant_admin_site
from core.exceptions import Conflict
from core.outbound_urls import OutboundUrlRefused, outbound_url_check
from core.paginator import CappedCountPaginator
from core.text import visible_ascii_validator
from events.models import Delivery, DeliveryAttempt, WebhookEndpoint
from events.services import (
    EVENT_TYPES,
    webhook_delivery_redeliver,
    webhook_endpoint_create,
    webhook_endpoint_delete,
    webhook_endpoint_rotate_secret,
    webhook_endpoint_update,
)


class WebhookEndpointForm(forms.ModelForm):
    events = forms.MultipleChoiceField(
        choices=[("*", "* (every type)")] + [(name, name) for name in EVENT_TYPES], widget=forms.CheckboxSelectMultiple
    )

    class Meta:
        model = WebhookEndpoint
        fields = ("url", "events", "application", "description", "include_private", "is_active")

    def clean_url(self):
        url = self.cleaned_data["url"]
        visible_ascii_validator(url)
        if not url.lower().startswith(("http://", "https://")):
            raise forms.ValidationError("Use an http:// or https:// URL.")
        try:
            outbound_url_check(url=url)  # the API's SSRF guard
        except OutboundUrlRefused as error:
            raise forms.ValidationError(str(error)) from error
        return url

    def clean_events(self):
        events = self.cleaned_data["events"]
        return ["*"] if "*" in events else events


@admin.register(WebhookEndpoint, site=tenant_admin_site)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = WebhookEndpointForm
    list_display = ("url", "event_types", "application", "is_active", "failing_since", "deactivated_at", "created_at")
    list_filter = ("is_active",)
    search_fields = ("url", "description")
    readonly_fields = ("current_secret", "failing_since", "deactivated_at", "created_at")
    actions = ["rotate_secret"]

    @admin.display(description="events")
    def event_types(self, obj: WebhookEndpoint) -> str:
        return ", ".join(obj.events)

    @admin.display(description="secret")
    def current_secret(self, obj: WebhookEndpoint) -> str:
        return secret_hint(obj.secret)

    def get_fields(self, request, obj=None):
        base = ("url", "events", "application", "description", "include_private")
        return base if obj is None else (*base, "is_active", *self.readonly_fields)

    def get_readonly_fields(self, request, obj=None):
        # The application filter is chosen once: changing it would widen or narrow what was agreed.
        return () if obj is None else ("application", *self.readonly_fields)

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if change:
            webhook_endpoint_update(
                endpoint=WebhookEndpoint.objects.get(pk=obj.pk),
                **{name: data[name] for name in ("url", "events", "description", "include_private", "is_active")},
            )
            return
        created = webhook_endpoint_create(
            url=data["url"], events=data["events"], application=data.get("application"),
            description=data.get("description") or "", include_private=data.get("include_private", False),
        )  # fmt: skip
        obj.pk, obj.created_at = created.pk, created.created_at
        # The only time it is shown: copy it into the receiver now.
        messages.warning(request, f"Signing secret (shown only now): {created.secret}")

    @admin.action(description="Rotate the signing secret (the old one signs too for 24 h)")
    def rotate_secret(self, request, queryset):
        for endpoint in queryset:
            try:
                secret = webhook_endpoint_rotate_secret(endpoint_id=endpoint.id)
            except Conflict as error:
                messages.error(request, f"{endpoint.url}: {error.message}")
                continue
            messages.warning(request, f"New signing secret of {endpoint.url} (shown only now): {secret}")

    def delete_model(self, request, obj):
        webhook_endpoint_delete(endpoint=obj)

    def delete_queryset(self, request, queryset):
        for endpoint in queryset:
            webhook_endpoint_delete(endpoint=endpoint)


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    fields = ("attempted_at", "status_code", "error", "duration_ms")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Delivery, site=tenant_admin_site)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ("created_at", "event_type", "endpoint", "status", "attempts", "last_status_code", "next_attempt_at", "delivered_at")
    list_filter = ("status", "endpoint", "event__type")
    search_fields = ("=id", "last_error")
    ordering = ("-created_at",)
    list_select_related = ("event", "endpoint")
    list_per_page = 50
    show_full_result_count = False
    paginator = CappedCountPaginator
    inlines = [DeliveryAttemptInline]
    actions = ["redeliver"]
    fields = (
        "event_type", "webhook_id", "endpoint", "status", "attempts", "next_attempt_at", "last_status_code",
        "last_error", "delivered_at", "created_at", "event_data",
    )  # fmt: skip
    readonly_fields = fields

    @admin.display(description="event type")
    def event_type(self, obj: Delivery) -> str:
        return obj.event.type

    @admin.display(description="webhook-id")
    def webhook_id(self, obj: Delivery) -> str:
        return obj.event.webhook_id

    @admin.display(description="data")
    def event_data(self, obj: Delivery):
        return obj.event.data

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Redeliver (the same webhook-id again)")
    def redeliver(self, request, queryset):
        done = skipped = 0
        for delivery_id in queryset.values_list("id", flat=True):
            try:
                webhook_delivery_redeliver(delivery_id=delivery_id)
                done += 1
            except Conflict:
                skipped += 1
        self.message_user(request, f"{done} deliver(ies) queued again.", messages.SUCCESS)
        if skipped:
            self.message_user(request, f"{skipped} skipped: their endpoint is inactive.", messages.WARNING)
