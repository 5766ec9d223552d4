import rest_framework.authtoken.admin  # noqa: F401  registers TokenProxy now, so that it can be unregistered
from django.contrib import admin, messages
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpResponseRedirect
from rest_framework.authtoken.models import TokenProxy

from core.exceptions import Conflict, SignInThrottled
from core.models import User
from core.services import user_admin_change_check, user_delete, user_sign_in, user_sign_in_unlock


class SignInLimitedAuthenticationForm(AdminAuthenticationForm):
    """The admin's login form, with the API's sign-in limits (`core.services.user_sign_in`): a password
    guessed at through the admin counts against the same email and address as one guessed at through
    POST /api/auth/token."""

    def clean(self):
        email, password = self.cleaned_data.get("username"), self.cleaned_data.get("password")
        if email is not None and password:
            try:
                self.user_cache = user_sign_in(request=self.request, email=email, password=password)
            except SignInThrottled as error:
                raise ValidationError(str(error), code="sign_in_throttled") from error
            if self.user_cache is None:
                raise self.get_invalid_login_error()
            self.confirm_login_allowed(self.user_cache)
        return self.cleaned_data


class TenantAdminSite(admin.AdminSite):
    """The Django admin on a tenant's host: only that tenant's admins, only that tenant's models.

    Kept apart from `admin.site` (the platform host's), which holds tenants and celery-beat's tables:
    those live in the public schema, and a tenant's supervisor must never see them.
    """

    login_form = SignInLimitedAuthenticationForm
    site_header = "Sociomile: tenant admin"
    site_title = "Sociomile tenant admin"
    index_title = "Operations"

    def has_permission(self, request):
        user = request.user
        return bool(user.is_active and user.is_authenticated and getattr(user, "role", None) == User.Role.ADMIN)


tenant_admin_site = TenantAdminSite(name="tenant_admin")
admin.site.login_form = SignInLimitedAuthenticationForm
admin.site.site_header = "Sociomile: platform admin"
admin.site.site_title = "Sociomile platform admin"

# DRF's token admin lists every platform admin's API token in clear (and the admin log keeps it as the
# object's name): anyone at that page could act as any of them. A user gets their own token from
# POST /api/auth/token; to cut someone off, deactivate their account (tokens of inactive users are refused).
admin.site.unregister(TokenProxy)


def secret_hint(value: str) -> str:
    """What the admin shows of a secret: enough to tell which one is configured (its last 4 characters),
    not enough to use it. The full value comes from the API that owns it, or not at all."""
    return f"••••{value[-4:]}" if value else "(not set)"


class UserCreationForm(AdminUserCreationForm):
    class Meta:
        model = User
        fields = ("email", "name", "role")


class UserEditForm(UserChangeForm):
    class Meta:
        model = User
        fields = "__all__"


class UserAdmin(BaseUserAdmin):
    form = UserEditForm
    add_form = UserCreationForm
    ordering = ("email",)
    list_display = ("email", "name", "role", "is_active", "last_login")
    list_filter = ("role", "is_active")
    search_fields = ("email", "name")
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Profile", {"fields": ("name", "role")}),
        ("Access", {"fields": ("is_active", "is_staff", "is_superuser")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "name", "role", "password1", "password2")}),)
    filter_horizontal = ()
    readonly_fields = ("last_login", "date_joined")

    actions = ["unlock_sign_in"]

    @admin.action(description="Lift the sign-in lockout of selected users")
    def unlock_sign_in(self, request, queryset):
        unlocked = [user.email for user in queryset if user_sign_in_unlock(email=user.email)]
        self.message_user(
            request,
            f"Sign-in lockout lifted for {', '.join(unlocked)}." if unlocked else "None of them had failed sign-ins.",
        )

    # A tenant never loses its last active admin here either (core.services.user_last_admin_check): the
    # services raise Conflict inside the page's transaction, which is rolled back and the refusal shown.
    def save_model(self, request, obj, form, change):
        with transaction.atomic():
            user_admin_change_check(user=obj)
            super().save_model(request, obj, form, change)

    def delete_model(self, request, obj):
        user_delete(user=obj)

    def delete_queryset(self, request, queryset):
        try:
            with transaction.atomic():
                for user in queryset:
                    user_delete(user=user)
        except Conflict as error:
            self.message_user(request, str(error), messages.ERROR)

    def changeform_view(self, request, *args, **kwargs):
        try:
            return super().changeform_view(request, *args, **kwargs)
        except Conflict as error:
            self.message_user(request, str(error), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def delete_view(self, request, *args, **kwargs):
        try:
            return super().delete_view(request, *args, **kwargs)
        except Conflict as error:
            self.message_user(request, str(error), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())


admin.site.register(User, UserAdmin)
tenant_admin_site.register(User, UserAdmin)
