"""One list + add/edit page for the small admin tables (stations, catalog, HL7 senders and
receivers): the items, and a form for a new or the chosen item, saved through core.records
(audited)."""

from __future__ import annotations

from django.contrib import messages
from django.db.models import Model
from django.forms import ModelForm
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from core import records


def list_and_edit(request, *, model: type[Model], form_class: type[ModelForm], pk: int | None,
                  title: str, list_url: str, edit_url: str, hint: str = "") -> HttpResponse:
    instance = get_object_or_404(model, pk=pk) if pk else None
    form = form_class(request.POST or None, instance=instance)
    if request.method == "POST" and form.is_valid():
        obj = records.save(form, actor=request.user.get_username(),
                           source=request.META.get("REMOTE_ADDR", ""))
        messages.success(request, f"Saved {obj}.")
        return redirect(list_url)
    return render(request, "crud.html", {
        "form": form, "obj": instance, "items": model.objects.all(), "title": title,
        "edit_url": edit_url, "hint": hint})
