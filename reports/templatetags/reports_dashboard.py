from django import template
from django.utils import timezone

from reports.selectors import report_dashboard_get

register = template.Library()


@register.simple_tag
def reports_dashboard() -> dict:
    """The dashboard's figures for the current tenant (the index page is only served to its admins)."""
    return report_dashboard_get(today=timezone.now().date())
