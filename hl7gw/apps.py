from django.apps import AppConfig


class Hl7GwConfig(AppConfig):
    """MLLP listener and HL7 v2 mapping (arrives with the HL7 gateway)."""

    name = "hl7gw"
    verbose_name = "HL7 gateway"
