from django.apps import AppConfig


class QiscusConfig(AppConfig):
    name = "integrations.qiscus"
    label = "qiscus"
    verbose_name = "Qiscus integration"

    def ready(self):
        from agents.hooks import chats_assigned_listen
        from contacts.hooks import customer_keys_register
        from integrations.qiscus.services import qiscus_chats_assigned, qiscus_customer_keys

        # The core tells the adapter about assignments; it never imports the adapter (agents/hooks.py).
        chats_assigned_listen(qiscus_chats_assigned)
        # An erasure and an export find the room's record (the customer id is the room id): contacts/hooks.py.
        customer_keys_register(qiscus_customer_keys)
