from django.contrib import admin

from core.admin import tenant_admin_site
from routing.models import Team


@admin.register(Team, site=tenant_admin_site)
class TeamAdmin(admin.ModelAdmin):
    list_display = ("name", "away_message")
    search_fields = ("name",)
    filter_horizontal = ("agents",)
