from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Users and platform plumbing"

    def ready(self):
        from core.serializers import strict_json_types_install

        strict_json_types_install()  # strict JSON types in every API input (core/serializers.py)
