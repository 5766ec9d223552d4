from django.urls import path

from tenants.apis import TenantConcurrencyApi, TenantDetailApi, TenantListCreateApi, TenantMessageListCreateApi

urlpatterns = [
    path("tenants", TenantListCreateApi.as_view(), name="tenant-list"),
    path("tenants/<int:tenant_id>", TenantDetailApi.as_view(), name="tenant-detail"),
    path("tenants/<int:tenant_id>/config/concurrency", TenantConcurrencyApi.as_view(), name="tenant-concurrency"),
    path("tenants/<int:tenant_id>/messages", TenantMessageListCreateApi.as_view(), name="tenant-messages"),
]
