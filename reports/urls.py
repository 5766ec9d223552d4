from django.urls import path

from reports.apis import ReportSummaryApi

urlpatterns = [
    path("reports/summary", ReportSummaryApi.as_view(), name="reports-summary"),
]
