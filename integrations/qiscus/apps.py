from django.apps import AppConfig


class QiscusConfig(AppConfig):
    name = "integrations.qiscus"
    label = "qiscus"
    verbose_name = "Qiscus integration"

    def ready(self):
        from agents.hooks import chats_assigned_listen
        from integrations.qiscus.services import qiscus_chats_assigned

        # The core tells the adapter about assignments; it never imports the adapter (agents/hooks.py).
        chats_assigned_listen(qiscus_chats_assigned)
