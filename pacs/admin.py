from django.contrib import admin

from pacs.models import ApplicationEntity, CommitmentRequest, Patient, Study


@admin.register(ApplicationEntity)
class ApplicationEntityAdmin(admin.ModelAdmin):
    list_display = ("ae_title", "host", "port", "kind", "may_store", "may_query")


@admin.register(Patient)
class PatientAdmin(admin.ModelAdmin):
    list_display = ("patient_id", "issuer_of_patient_id", "patient_name", "patient_birth_date")
    search_fields = ("patient_id", "patient_name")


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    list_display = ("study_instance_uid", "patient", "study_date", "modalities_in_study")
    raw_id_fields = ("patient",)


@admin.register(CommitmentRequest)
class CommitmentRequestAdmin(admin.ModelAdmin):
    list_display = ("ae_title", "transaction_uid", "created_at", "delivered_at", "committed",
                    "failed", "attempts", "last_error")
    list_filter = ("ae_title",)
