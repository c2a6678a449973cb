from django.apps import AppConfig


class PacsConfig(AppConfig):
    name = "pacs"
    verbose_name = "Archive"

    def ready(self) -> None:
        # Storage Commitment reports and forwarded instances still pending (restart, lost task)
        # are sent again
        from core.signals import deliveries_due
        from pacs.services import commitment, forwarding

        deliveries_due.connect(commitment.resume_pending, dispatch_uid="stgcmt-resume")
        deliveries_due.connect(forwarding.resume_pending, dispatch_uid="forward-resume")
