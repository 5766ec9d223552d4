from django.contrib.admin.models import LogEntry
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django_tenants.utils import get_public_schema_name
from rest_framework.authtoken.models import Token

from core.models import User, normalize_email


def user_create(*, email: str, password: str, role: str, name: str = "", password_hash: str | None = None) -> User:
    """Creates a user in the current schema (public for platform admins, a tenant's for its staff).

    Raises ValidationError for a taken email or a weak password; nothing is written then. `password_hash`,
    if given, is `make_password(password)` computed beforehand (provisioning hashes while it copies the
    tenant's schema); the password is validated all the same.
    """
    email = normalize_email(email)
    if User.objects.filter(email=email).exists():
        raise ValidationError({"email": ["A user with this email already exists."]})
    user = User(email=email, name=name, role=role)
    try:
        validate_password(password, user=user)
    except ValidationError as error:
        raise ValidationError({"password": error.messages}) from error
    # Platform admins and tenant admins use the Django admin of their host, with every permission there
    # (a tenant admin's account exists only in its tenant's schema); agents use the API only.
    user.is_staff = user.is_superuser = role in (User.Role.PLATFORM_ADMIN, User.Role.ADMIN)
    if password_hash is None:
        user.set_password(password)
    else:
        user.password = password_hash
    user.save()
    return user


def user_token_get_or_create(*, user: User) -> Token:
    """The user's API token in the current schema; a token is only ever valid on its own host."""
    token, _ = Token.objects.get_or_create(user=user)
    return token


def user_delete(*, user: User) -> None:
    """Deletes a user of the current schema.

    In the public schema Django's deletion collector cannot be used: tenant apps' tables (chats,
    messages) point at users but exist only in tenant schemas, and the collector would query them. A
    platform admin owns nothing there, so its own rows are deleted directly.
    """
    if connection.schema_name != get_public_schema_name():
        user.delete()
        return
    with transaction.atomic():
        Token.objects.filter(user=user).delete()
        LogEntry.objects.filter(user=user).delete()
        user.groups.clear()
        user.user_permissions.clear()
        User.objects.filter(pk=user.pk)._raw_delete(connection.alias)
