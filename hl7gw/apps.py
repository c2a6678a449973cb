from django.apps import AppConfig


class Hl7GwConfig(AppConfig):
    """MLLP listener, HL7 v2 mapping into the worklist, outbound status messages."""

    name = "hl7gw"
    verbose_name = "HL7 gateway"

    def ready(self) -> None:
        from hl7gw.outbound.service import on_step_status_changed
        from worklist.signals import step_status_changed

        step_status_changed.connect(on_step_status_changed, dispatch_uid="hl7gw-outbound")

        from core.signals import deliveries_due
        from hl7gw.outbound.service import resume_pending

        deliveries_due.connect(resume_pending, dispatch_uid="hl7gw-resume")
