"""Contacts' API: staff search, read and edit contacts; admins export and erase them."""

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from contacts.models import Contact
from contacts.selectors import contact_data, contact_export, contact_get, contact_list
from contacts.services import contact_erase, contact_erase_needed, contact_update
from core.pagination import CursorPagination, paginate
from core.permissions import IsTenantAdmin, IsTenantStaff
from core.serializers import NameField, StrictSerializer

ATTRIBUTES_MAX_KEYS = 50
ATTRIBUTE_KEY_MAX_LENGTH = 64
ATTRIBUTE_VALUE_MAX_LENGTH = 1000


@extend_schema_serializer(component_name="Contact")
class ContactOutputSerializer(serializers.Serializer):
    customer_id = serializers.CharField()
    name = serializers.CharField()
    email = serializers.CharField()
    phone = serializers.CharField()
    attributes = serializers.DictField()
    chats_count = serializers.IntegerField()
    first_seen_at = serializers.DateTimeField()
    last_seen_at = serializers.DateTimeField()


def _contact_or_404(customer_id: str) -> Contact:
    contact = contact_get(customer_id=customer_id)
    if contact is None:
        raise Http404("No contact with this customer id.")
    return contact


class ContactListApi(APIView):
    """Contacts, most recently seen first; `q` searches the customer id, name, email and phone."""

    permission_classes = [IsTenantStaff]
    pagination_class = CursorPagination

    class FilterSerializer(serializers.Serializer):
        q = serializers.CharField(
            max_length=255, required=False, allow_blank=True, trim_whitespace=False,
            help_text="Part of a customer id, name, email or phone.",
        )  # fmt: skip

    @extend_schema(parameters=[FilterSerializer], responses={200: ContactOutputSerializer(many=True)})
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        contacts = contact_list(q=filters.validated_data.get("q") or None)
        return paginate(
            request=request, view=self, queryset=contacts, serializer_class=ContactOutputSerializer,
            ordering=("-last_seen_at",),
        )  # fmt: skip


class ContactDetailApi(APIView):
    """Staff read and edit a contact; admins erase it (DELETE, 204)."""

    @extend_schema_serializer(component_name="ContactUpdate")
    class InputSerializer(StrictSerializer):
        name = NameField(max_length=255, required=False, allow_blank=True)
        email = serializers.EmailField(max_length=254, required=False, allow_blank=True)
        phone = serializers.RegexField(
            r"^\+?[0-9][0-9 ()\-]{0,30}$", max_length=32, required=False, allow_blank=True,
            error_messages={"invalid": "Digits, spaces, ( ) and -, optionally after a +."},
        )  # fmt: skip
        attributes = serializers.DictField(required=False)

        def validate_attributes(self, value: dict) -> dict:
            if len(value) > ATTRIBUTES_MAX_KEYS:
                raise serializers.ValidationError(f"At most {ATTRIBUTES_MAX_KEYS} attributes.")
            for key, item in value.items():
                if not key or len(key) > ATTRIBUTE_KEY_MAX_LENGTH:
                    raise serializers.ValidationError(f"Attribute names are 1 to {ATTRIBUTE_KEY_MAX_LENGTH} characters.")
                if isinstance(item, str):
                    if len(item) > ATTRIBUTE_VALUE_MAX_LENGTH:
                        raise serializers.ValidationError(f"{key}: at most {ATTRIBUTE_VALUE_MAX_LENGTH} characters.")
                elif not (item is None or isinstance(item, (bool, int, float))):
                    raise serializers.ValidationError(f"{key}: a string, number, boolean or null (no nesting).")
            return value

    def get_permissions(self):
        return [IsTenantAdmin()] if self.request.method == "DELETE" else [IsTenantStaff()]

    @extend_schema(responses={200: ContactOutputSerializer})
    def get(self, request, customer_id: str):
        return Response(contact_data(_contact_or_404(customer_id)))

    @extend_schema(request=InputSerializer, responses={200: ContactOutputSerializer})
    def patch(self, request, customer_id: str):
        contact = _contact_or_404(customer_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        contact = contact_update(contact=contact, **serializer.validated_data)
        return Response(contact_data(contact))

    @extend_schema(responses={204: None})
    def delete(self, request, customer_id: str):
        if len(customer_id) > Contact._meta.get_field("customer_id").max_length or not contact_erase_needed(customer_id=customer_id):
            raise Http404("Nothing is held about this customer id.")
        contact_erase(customer_id=customer_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ContactExportApi(APIView):
    """Everything held about the customer, as JSON (admin)."""

    permission_classes = [IsTenantAdmin]

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request, customer_id: str):
        # Chats can outlive their contact (made before contacts existed, or by hand): exported all the same.
        contact = contact_get(customer_id=customer_id)
        if contact is None and (len(customer_id) > Contact._meta.get_field("customer_id").max_length or not contact_erase_needed(customer_id=customer_id)):
            raise Http404("Nothing is held about this customer id.")
        return Response(contact_export(customer_id=customer_id, contact=contact))
