from django.urls import path

from audit.apis import AuditLogApi

urlpatterns = [
    path("audit-log", AuditLogApi.as_view(), name="audit-log"),
]
