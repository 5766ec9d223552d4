from core.admin import tenant_admin_site

# The tenant admin's index page is the operators' dashboard: the usual list of models below charts of the
# reports (reports/templatetags/reports_dashboard.py reads them; Chart.js is served from our static files).
tenant_admin_site.index_template = "admin/reports/index.html"
