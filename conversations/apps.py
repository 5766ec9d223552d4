from django.apps import AppConfig


class ConversationsConfig(AppConfig):
    name = "conversations"
    verbose_name = "Conversations"

    def ready(self):
        from django.db.models.signals import post_delete

        from conversations.models import Application
        from core.routing import routing_changed_receiver

        # An application's id and token never change, so only its deletion invalidates the routing cache
        # (core.routing); whoever deletes it (the tenant admin, a cascade).
        post_delete.connect(routing_changed_receiver, sender=Application, dispatch_uid="routing_delete_Application")
