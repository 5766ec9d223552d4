from django.db import connection
from django_tenants.utils import get_public_schema_name
from rest_framework.permissions import BasePermission

from core.models import User


def _on_platform_host() -> bool:
    return connection.schema_name == get_public_schema_name()


class IsPlatformAdmin(BasePermission):
    message = "Only platform admins may do this."

    def has_permission(self, request, view):
        user = request.user
        return bool(user and user.is_authenticated and _on_platform_host() and user.role == User.Role.PLATFORM_ADMIN)


class IsTenantStaff(BasePermission):
    message = "Only this tenant's admins and agents may do this."

    def has_permission(self, request, view):
        user = request.user
        return bool(user and user.is_authenticated and not _on_platform_host() and user.is_tenant_staff)


class IsTenantAdmin(BasePermission):
    message = "Only this tenant's admins may do this."

    def has_permission(self, request, view):
        user = request.user
        return bool(user and user.is_authenticated and not _on_platform_host() and user.is_tenant_admin)


class IsTenantAgent(BasePermission):
    message = "Only this tenant's agents may do this."

    def has_permission(self, request, view):
        user = request.user
        return bool(IsTenantStaff().has_permission(request, view) and user.role == User.Role.AGENT)
