from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django_tenants.models import DomainMixin, TenantMixin

MAX_TENANT_CONCURRENCY = 64


class Tenant(TenantMixin):
    """A business using Sociomile. Its slug is its PostgreSQL schema name and its host's first label."""

    name = models.CharField(max_length=255)
    concurrency = models.PositiveSmallIntegerField(
        default=3,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_TENANT_CONCURRENCY)],
        help_text="How many of this tenant's tasks may run at once across all workers.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    # Schemas are created by tenants.services.tenant_create and dropped by tenant_delete.
    auto_create_schema = True
    auto_drop_schema = True

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.schema_name})"

    @property
    def slug(self) -> str:
        return self.schema_name


class Domain(DomainMixin):
    def __str__(self) -> str:
        return self.domain
