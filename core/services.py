import hashlib

from django.conf import settings
from django.contrib.admin.models import LogEntry
from django.contrib.auth import authenticate
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django_tenants.utils import get_public_schema_name
from rest_framework.authtoken.models import Token
from rest_framework.throttling import BaseThrottle

from core.exceptions import Conflict, SignInThrottled
from core.models import User, normalize_email
from core.redis import get_redis, tenant_key, window_count, window_uncount


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
    try:
        with transaction.atomic():  # a savepoint: the caller's transaction stays usable for its rollback
            user.save()
    except IntegrityError as error:
        # Taken meanwhile: the check above and this insert are apart by the password's hashing (~0.1 s), so a
        # second request for the same email can pass the check; the unique constraint decides.
        raise ValidationError({"email": ["A user with this email already exists."]}) from error
    return user


def user_sign_in(*, request, email: str, password: str) -> User | None:
    """The active user of this host's schema with this email and password, or None; raises SignInThrottled
    when the email, or the client's address, has used up its attempts in the current window.

    Every attempt is counted before its password is checked, under the email and under the client's address
    (`SIGN_IN_ATTEMPTS_PER_EMAIL`, `SIGN_IN_ATTEMPTS_PER_ADDRESS` per `SIGN_IN_WINDOW_SECONDS`): counted first,
    concurrent guesses cannot slip past the limit together, and a refused attempt costs no password hash. A
    success takes its attempt back from the address and clears the email's count, so the limits hold failures
    only. The counts are per host (tenant-scoped keys): a lockout on one tenant touches no other."""
    email = normalize_email(email)
    address = client_address(request)
    email_key = _sign_in_email_key(email)
    address_key = _sign_in_key("address", address)
    waits = []
    for key, limit in (
        (email_key, settings.SIGN_IN_ATTEMPTS_PER_EMAIL),
        (address_key, settings.SIGN_IN_ATTEMPTS_PER_ADDRESS),
    ):
        count, seconds_left = window_count(key, window_seconds=settings.SIGN_IN_WINDOW_SECONDS)
        if count > limit:
            waits.append(seconds_left)
    if waits:
        raise SignInThrottled(seconds=max(waits))
    user = authenticate(request, username=email, password=password)
    if user is not None:
        get_redis().delete(email_key)
        window_uncount(address_key)
    return user


def user_sign_in_unlock(*, email: str) -> bool:
    """Clears the failed sign-ins counted against this email on this host (an operator lifting a lockout
    before its window ends); True if there were any. The client address's count is left alone."""
    return bool(get_redis().delete(_sign_in_email_key(normalize_email(email))))


def client_address(request) -> str:
    """The client's IP address as DRF's throttles see it: REMOTE_ADDR, or with `NUM_PROXIES` (a setting of
    REST_FRAMEWORK) set, the address that many entries from the end of X-Forwarded-For."""
    return BaseThrottle().get_ident(request) or "unknown"


def _sign_in_key(*parts: str) -> str:
    return tenant_key(connection.schema_name, "sign-in", *parts)


def _sign_in_email_key(email: str) -> str:
    # The email goes in hashed: no address book in Redis's key space, and a key of bounded length.
    return _sign_in_key("email", hashlib.sha256(email.encode()).hexdigest()[:32])


def user_token_get_or_create(*, user: User) -> Token:
    """The user's API token in the current schema; a token is only ever valid on its own host."""
    token, _ = Token.objects.get_or_create(user=user)
    return token


def user_token_revoke(*, user: User) -> None:
    """Deletes the user's API token in the current schema (signing out everywhere on this host); the next
    sign-in makes a new one. Tokens of the same email on other hosts are other users' and stay."""
    Token.objects.filter(user=user).delete()


LAST_ADMIN_REFUSAL = (
    "This is the tenant's last active admin: make another user an admin first (or ask the platform admin to "
    "reset one: POST /api/tenants/{id}/admin-reset)."
)


def user_last_admin_check(*, user_id: int, remains_admin: bool) -> None:
    """Refuses (Conflict, 409) a change that would leave a tenant without an active admin: demoting,
    deactivating or deleting its only one. Call it inside the transaction that makes the change, before it.

    The tenant's active admin rows are locked (FOR NO KEY UPDATE, in id order) and only then counted, so two
    admins demoting each other at once are serialised: the second one's count, read after the first
    committed, no longer includes the first's victim (READ COMMITTED re-checks a locked row's WHERE), and it
    is refused. No-op on the platform host, which has no tenant admins.
    """
    if remains_admin or connection.schema_name == get_public_schema_name():
        return
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("user_last_admin_check must run inside the transaction that changes the user")
    admins = list(
        User.objects.select_for_update(no_key=True)
        .filter(role=User.Role.ADMIN, is_active=True)
        .order_by("id")
        .values_list("id", flat=True)
    )
    if admins == [user_id]:
        raise Conflict(LAST_ADMIN_REFUSAL)


def user_admin_change_check(*, user: User) -> None:
    """For a form that has already set `user`'s new role and is_active (the Django admin's user page): the
    last-admin rule against the stored row. Inside the transaction that saves it."""
    if user.pk is None:
        return
    stored = User.objects.filter(pk=user.pk).values_list("role", "is_active").first()
    if stored is None or stored != (User.Role.ADMIN, True):
        return
    user_last_admin_check(user_id=user.pk, remains_admin=user.role == User.Role.ADMIN and user.is_active)


def user_delete(*, user: User) -> None:
    """Deletes a user of the current schema; never a tenant's last active admin (Conflict).

    In the public schema Django's deletion collector cannot be used: tenant apps' tables (chats,
    messages) point at users but exist only in tenant schemas, and the collector would query them. A
    platform admin owns nothing there, so its own rows are deleted directly.
    """
    if connection.schema_name != get_public_schema_name():
        with transaction.atomic():
            user_last_admin_check(user_id=user.pk, remains_admin=False)
            user.delete()
        return
    with transaction.atomic():
        Token.objects.filter(user=user).delete()
        LogEntry.objects.filter(user=user).delete()
        user.groups.clear()
        user.user_permissions.clear()
        User.objects.filter(pk=user.pk)._raw_delete(connection.alias)
