from django.apps import AppConfig


class WorklistConfig(AppConfig):
    """Orders, requested procedures and scheduled procedure steps (arrives with the worklist)."""

    name = "worklist"
    verbose_name = "Worklist"
