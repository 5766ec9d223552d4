from django.urls import path

from contacts.apis import ContactDetailApi, ContactExportApi, ContactListApi

# A customer id is whatever the channel sent, "/" included (`path` takes the rest of the path). The export route
# comes first, so an id that itself ends in "/export" is reached by the detail route only.
urlpatterns = [
    path("contacts", ContactListApi.as_view(), name="contacts"),
    path("contacts/<path:customer_id>/export", ContactExportApi.as_view(), name="contact-export"),
    path("contacts/<path:customer_id>", ContactDetailApi.as_view(), name="contact"),
]
