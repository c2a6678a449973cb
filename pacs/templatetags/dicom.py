"""How pages show DICOM values."""

from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def dicom_date(value: str, time: str = "") -> str:
    """DA (and TM) as people read them: 20240315 and 101112.5 -> 2024-03-15 10:11."""
    value = (value or "").strip()
    if len(value) != 8 or not value.isdigit():
        return value
    text = f"{value[:4]}-{value[4:6]}-{value[6:]}"
    time = (time or "").strip().replace(":", "")
    if len(time) >= 4 and time[:4].isdigit():
        text += f" {time[:2]}:{time[2:4]}"
    return text


@register.filter
def study_link(template: str, study) -> str:
    """A configured viewer's URL for a study (portal.context_processors): {study} and
    {patient_id} URL-encoded."""
    from urllib.parse import quote

    return (template.replace("{study}", quote(study.study_instance_uid, safe=""))
            .replace("{patient_id}", quote(study.patient.patient_id, safe="")))
