"""Contacts in the tenant admin: searched and read; edits go through the API's service, erasure through an
action that calls the same service as DELETE /api/contacts/{customer_id}."""

from django.contrib import admin, messages

from contacts.models import Contact
from contacts.services import contact_erase
from core.admin import tenant_admin_site
from core.exceptions import ApplicationError
from core.paginator import CappedCountPaginator


@admin.register(Contact, site=tenant_admin_site)
class ContactAdmin(admin.ModelAdmin):
    list_display = ("customer_id", "name", "email", "phone", "chats_count", "last_seen_at")
    search_fields = ("=customer_id", "name", "email", "phone")
    date_hierarchy = "last_seen_at"
    paginator = CappedCountPaginator
    show_full_result_count = False
    readonly_fields = ("customer_id", "name", "email", "phone", "attributes", "chats_count", "first_seen_at", "last_seen_at")
    actions = ["erase"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # Django's delete would leave messages and Redis records: the erase action removes them

    @admin.action(description="Erase the selected customers (messages, contact, Redis records, event data)")
    def erase(self, request, queryset):
        erased = 0
        for customer_id in queryset.values_list("customer_id", flat=True):
            try:
                contact_erase(customer_id=customer_id)
                erased += 1
            except ApplicationError as error:
                self.message_user(request, str(error), level=messages.ERROR)
        if erased:
            self.message_user(request, f"Erased {erased} customer(s).", level=messages.SUCCESS)
