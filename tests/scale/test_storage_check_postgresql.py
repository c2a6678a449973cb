"""check_storage on PostgreSQL, outside a transaction as the command runs (the rows are read
through a server-side cursor there)."""

from __future__ import annotations

import os

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from pacs.models import Instance
from pacs.services import deletion, storage_check
from pacs.services.ingest import store_instance
from tests.samples import UNCOMPRESSED, sample

pytestmark = [pytest.mark.scale, pytest.mark.django_db(transaction=True)]


def test_check_and_repair_on_postgresql(storage_dir, capsys):
    for name in UNCOMPRESSED:
        store_instance(data=sample(name).read_bytes(), received_from="MODALITY")
    instances = list(Instance.objects.order_by("pk"))
    assert len(instances) >= 3
    for path in storage_dir.rglob("*.dcm"):
        then = path.stat().st_mtime - 3600
        os.utime(path, (then, then))
    orphan, missing = instances[0], instances[1]
    # A crash between publishing the file and committing its rows: the file stays, and the
    # counts are as they were before (tidy counts them from the rows left).
    study = orphan.series.study
    Instance.objects.filter(pk=orphan.pk).delete()
    deletion.tidy(study)
    (storage_dir / missing.file_key).unlink()
    report = storage_check.check()
    assert report.orphans == [orphan.file_key]
    assert [m.sop_instance_uid for m in report.missing] == [missing.sop_instance_uid]
    assert report.instances == len(instances) - 1
    with pytest.raises(CommandError, match="1 orphan file"):
        call_command("check_storage", "--no-progress")
    call_command("check_storage", "--no-progress", "--reindex-orphans", "--forget-missing")
    assert "reindexed orphans: 1 stored" in capsys.readouterr().out
    assert set(Instance.objects.values_list("sop_instance_uid", flat=True)) == {
        i.sop_instance_uid for i in instances if i.pk != missing.pk}
