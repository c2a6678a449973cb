"""The patient pages: the registry that images, orders and HL7 share, patient by patient."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from core.errors import ServiceError
from core.paging import FromBothEnds
from core.roles import permission_required
from pacs import identity
from pacs.forms import AnonymizeForm
from pacs.models import Job, Patient
from worklist import selectors, services
from worklist.forms import MergeForm, PatientEditForm
from worklist.models import PatientMerge

PAGE_SIZES = (25, 50, 100)


@permission_required("worklist.view")
def patient_list(request):
    text = request.GET.get("q", "")
    size = int(request.GET["size"]) if request.GET.get("size") in map(str, PAGE_SIZES) \
        else PAGE_SIZES[0]
    page = FromBothEnds(selectors.patient_search(text), size).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "worklist/patient_list.html", {
        "page": page, "q": text, "size": size, "sizes": PAGE_SIZES,
        "query": query.urlencode()})


@permission_required("worklist.view")
def patient_detail(request, pk: int):
    patient = get_object_or_404(Patient, pk=pk)
    return render(request, "worklist/patient_detail.html", {
        "patient": patient,
        "label": identity.PatientKey.of(patient).label(),
        "studies": patient.studies.order_by("-study_date", "-study_time"),
        "orders": patient.orders.prefetch_related("procedures__steps").order_by("-created_at"),
        "history": patient.changes.all()[:200],
        "merges": PatientMerge.objects.filter(survivor=patient),
        "duplicates": selectors.probable_duplicates(patient),
        "jobs": Job.objects.filter(kind=Job.Kind.MODIFY, level="PATIENT",
                                   keys__patient=patient.pk)[:5],
        "edit_form": PatientEditForm(patient=patient),
        "merge_form": MergeForm(),
        "anonymize_form": AnonymizeForm(),
        "anonymize_url": reverse("patient-anonymize", args=[patient.pk]),
    })


@permission_required("patient.edit")
def patient_edit(request, pk: int):
    patient = get_object_or_404(Patient, pk=pk)
    form = PatientEditForm(request.POST or None, patient=patient)
    if request.method == "POST" and form.is_valid():
        if services.edit_patient(patient, **form.values(), actor=request.user.username):
            messages.success(request, "Saved. The stored images' headers are being rewritten "
                                      "with the new demographics (see the job below).")
        else:
            messages.info(request, "Nothing changed.")
        return redirect("patient-detail", patient.pk)
    return render(request, "worklist/patient_edit.html", {"patient": patient, "form": form})


@permission_required("patient.edit")
@require_POST
def patient_merge(request, pk: int):
    """Merge another patient (the prior one, by its ID) into this one: ADT^A40's effect."""
    patient = get_object_or_404(Patient, pk=pk)
    form = MergeForm(request.POST)
    if not form.is_valid():
        messages.error(request, "To merge, give the other patient's ID and tick the "
                                "confirmation.")
        return redirect("patient-detail", patient.pk)
    d = form.cleaned_data
    prior = Patient.objects.filter(
        patient_id=d["prior_patient_id"].strip(),
        issuer_of_patient_id=identity.issuer_or_local(d["prior_issuer"])).first()
    if prior is None:
        messages.error(request, f"No patient with ID {d['prior_patient_id']!r}"
                                + (f" of issuer {d['prior_issuer']!r}." if d["prior_issuer"]
                                   else "."))
        return redirect("patient-detail", patient.pk)
    try:
        services.merge_into(prior, patient, actor=request.user.username, source="page")
    except ServiceError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Merged patient {identity.PatientKey.of(prior).label()} "
                                  "into this one. It can be undone below.")
    return redirect("patient-detail", patient.pk)


@permission_required("patient.edit")
@require_POST
def patient_unmerge(request, pk: int):
    merge = get_object_or_404(PatientMerge, pk=pk)
    try:
        prior = services.unmerge(merge, actor=request.user.username)
    except ServiceError as exc:
        messages.error(request, str(exc))
        return redirect("patient-detail", merge.survivor_id)
    messages.success(request, f"Unmerged: patient {identity.PatientKey.of(prior).label()} is "
                              "back with its studies and orders.")
    return redirect("patient-detail", prior.pk)
