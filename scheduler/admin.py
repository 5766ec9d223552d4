from django import forms
from django.conf import settings
from django.contrib import admin, messages

from core.admin import secret_hint, tenant_admin_site
from core.exceptions import Conflict
from core.outbound_urls import OutboundUrlRefused, outbound_url_check
from core.paginator import CappedCountPaginator
from core.text import visible_ascii_validator
from scheduler.models import OutboundMessage, SchedulerSetting
from scheduler.services import (
    outbound_message_create,
    outbound_message_retry,
    scheduler_start,
    scheduler_stop,
    scheduler_update,
)


class OutboundMessageForm(forms.ModelForm):
    class Meta:
        model = OutboundMessage
        fields = ("to", "content")

    def clean_content(self):
        content = self.cleaned_data["content"]
        if len(content) > settings.OUTBOUND_CONTENT_MAX_LENGTH:
            raise forms.ValidationError(f"At most {settings.OUTBOUND_CONTENT_MAX_LENGTH} characters.")
        return content


@admin.register(OutboundMessage, site=tenant_admin_site)
class OutboundMessageAdmin(admin.ModelAdmin):
    form = OutboundMessageForm
    list_display = ("created_at", "to", "short_content", "status", "attempts", "next_attempt_at", "sent_at", "message_id")
    list_filter = ("status", ("created_at", admin.DateFieldListFilter))
    search_fields = ("=id", "to", "content", "=message_id", "last_error")
    ordering = ("-created_at",)
    list_per_page = 50
    show_full_result_count = False
    paginator = CappedCountPaginator
    actions = ["retry_failed"]
    readonly_fields = (
        "id", "status", "attempts", "next_attempt_at", "lease_expires_at", "message_id", "sent_at", "last_error",
        "created_at", "updated_at",
    )  # fmt: skip

    @admin.display(description="content")
    def short_content(self, obj: OutboundMessage) -> str:
        return obj.content if len(obj.content) <= 60 else obj.content[:57] + "..."

    def get_fields(self, request, obj=None):
        return ("to", "content") if obj is None else ("to", "content", *self.readonly_fields)

    def get_readonly_fields(self, request, obj=None):
        # A queued message is only ever changed by the scheduler (or the retry action), never by hand.
        return () if obj is None else ("to", "content", *self.readonly_fields)

    def save_model(self, request, obj, form, change):
        if not change:  # through the service: the same validation (E.164, length limit) as the API
            created = outbound_message_create(to=obj.to, content=obj.content)
            obj.pk, obj.created_at = created.pk, created.created_at

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Retry the selected failed messages")
    def retry_failed(self, request, queryset):
        retried = skipped = 0
        for message_id in queryset.values_list("id", flat=True):
            try:
                outbound_message_retry(message_id=message_id)
                retried += 1
            except Conflict:
                skipped += 1
        self.message_user(request, f"{retried} message(s) queued again.", messages.SUCCESS)
        if skipped:
            self.message_user(
                request, f"{skipped} message(s) skipped: only failed messages can be retried.", messages.WARNING
            )


class SchedulerSettingForm(forms.ModelForm):
    # Write-only, as in the API: the key never goes back to a browser (page source, form autofill, caches).
    auth_key = forms.CharField(
        required=False,
        strip=False,
        max_length=255,
        validators=[visible_ascii_validator],  # sent as a header, as it is
        widget=forms.PasswordInput(render_value=False),
        label="New auth key",
        help_text="Sent as x-ins-auth-key. Never shown: type a key to replace the current one, or leave empty to keep it.",
    )
    remove_auth_key = forms.BooleanField(required=False, label="Remove the auth key")

    class Meta:
        model = SchedulerSetting
        fields = ("interval_seconds", "batch_size", "webhook_url")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Compared with an empty initial value, the field is "changed" (and so named in the admin's history)
        # only when a new key was typed.
        self.initial["auth_key"] = ""

    def clean_webhook_url(self):
        url = self.cleaned_data["webhook_url"]
        visible_ascii_validator(url)  # sent in the request line, as it is
        if url:
            try:
                outbound_url_check(url=url)  # the API's SSRF guard
            except OutboundUrlRefused as error:
                raise forms.ValidationError(str(error)) from error
        return url


@admin.register(SchedulerSetting, site=tenant_admin_site)
class SchedulerSettingAdmin(admin.ModelAdmin):
    form = SchedulerSettingForm
    list_display = ("__str__", "running", "interval_seconds", "batch_size", "webhook_url", "last_run_at")
    fields = (
        "running", "interval_seconds", "batch_size", "webhook_url", "current_auth_key", "auth_key", "remove_auth_key",
        "schedule_anchor_at", "last_run_at",
    )  # fmt: skip
    readonly_fields = ("running", "current_auth_key", "schedule_anchor_at", "last_run_at")
    actions = ["start", "stop"]

    @admin.display(description="auth key")
    def current_auth_key(self, obj: SchedulerSetting) -> str:
        return secret_hint(obj.auth_key)

    def has_add_permission(self, request):
        return False  # one per tenant, made by provisioning

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        # Through the service, so a new interval also reaches the tenant's celery-beat schedule.
        changes = {name: form.cleaned_data[name] for name in ("interval_seconds", "batch_size", "webhook_url")}
        if form.cleaned_data["remove_auth_key"]:
            changes["auth_key"] = ""
        elif form.cleaned_data["auth_key"]:
            changes["auth_key"] = form.cleaned_data["auth_key"]
        scheduler_update(**changes)

    @admin.action(description="Start the scheduler")
    def start(self, request, queryset):
        scheduler_start()
        self.message_user(request, "Scheduler started: the first run comes one interval from now.", messages.SUCCESS)

    @admin.action(description="Stop the scheduler")
    def stop(self, request, queryset):
        scheduler_stop()
        self.message_user(request, "Scheduler stopped.", messages.SUCCESS)
