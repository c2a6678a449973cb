from django.apps import AppConfig


class PacsConfig(AppConfig):
    name = "pacs"
    verbose_name = "Archive"

    def ready(self) -> None:
        # Storage Commitment reports still pending (restart, lost task) are sent again
        from pacs.services.commitment import resume_pending
        from portal.signals import deliveries_due

        deliveries_due.connect(resume_pending, dispatch_uid="stgcmt-resume")
