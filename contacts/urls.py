from django.urls import path, re_path

from contacts.apis import ContactDetailApi, ContactExportApi, ContactListApi

# A customer id is whatever the channel sent, "/" included: the detail route takes the rest of the path. The
# export route comes first, so an id ending in "/export" is read by its detail route only.
urlpatterns = [
    path("contacts", ContactListApi.as_view(), name="contacts"),
    re_path(r"^contacts/(?P<customer_id>.+)/export$", ContactExportApi.as_view(), name="contact-export"),
    re_path(r"^contacts/(?P<customer_id>.+)$", ContactDetailApi.as_view(), name="contact"),
]
