from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models
from django.utils import timezone


class TimestampedModel(models.Model):
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class UserManager(BaseUserManager):
    use_in_migrations = True

    def create_user(self, email, password=None, **fields):
        user = self.model(email=normalize_email(email), **fields)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email, password=None, **fields):
        fields.setdefault("role", User.Role.PLATFORM_ADMIN)
        fields.update(is_staff=True, is_superuser=True)
        return self.create_user(email, password, **fields)


# The column's length (EmailField's default, RFC 5321's limit for a path). Django's EmailValidator passes up to
# 320 characters, so every input that writes an email states this limit, or a long one would fail the insert.
EMAIL_MAX_LENGTH = 254


def normalize_email(email: str) -> str:
    # Emails are compared case-insensitively everywhere: store them lower-cased.
    return (email or "").strip().lower()


class User(AbstractBaseUser, PermissionsMixin):
    """A person who signs in. The table exists in every schema: platform admins live in the public
    schema, a tenant's admins and agents in the tenant's schema, so an account never crosses tenants."""

    class Role(models.TextChoices):
        PLATFORM_ADMIN = "platform_admin", "Platform admin"
        ADMIN = "admin", "Admin"
        AGENT = "agent", "Agent"

    email = models.EmailField(max_length=EMAIL_MAX_LENGTH, unique=True)
    name = models.CharField(max_length=255, blank=True)
    role = models.CharField(max_length=20, choices=Role.choices)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False, help_text="May sign in to this host's Django admin.")
    date_joined = models.DateTimeField(default=timezone.now)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.email

    @property
    def is_tenant_admin(self) -> bool:
        return self.role == self.Role.ADMIN

    @property
    def is_tenant_staff(self) -> bool:
        return self.role in (self.Role.ADMIN, self.Role.AGENT)
