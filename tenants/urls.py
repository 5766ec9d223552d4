from django.urls import path

from tenants.apis import (
    TenantAdminResetApi,
    TenantConcurrencyApi,
    TenantDetailApi,
    TenantListCreateApi,
    TenantMessageListCreateApi,
)

urlpatterns = [
    path("tenants", TenantListCreateApi.as_view(), name="tenant-list"),
    path("tenants/<int:tenant_id>", TenantDetailApi.as_view(), name="tenant-detail"),
    path("tenants/<int:tenant_id>/config/concurrency", TenantConcurrencyApi.as_view(), name="tenant-concurrency"),
    path("tenants/<int:tenant_id>/admin-reset", TenantAdminResetApi.as_view(), name="tenant-admin-reset"),
    path("tenants/<int:tenant_id>/messages", TenantMessageListCreateApi.as_view(), name="tenant-messages"),
]
