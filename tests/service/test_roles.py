"""The roles: their groups exist on a fresh install, an account without a role sees nothing of
the archive, and accounts that existed before roles keep the browsing they had."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from core.roles import allowed, grant, roles_of
from tests.portal_process import ROOT, portal_env
from tests.users import user_with


def test_a_fresh_install_has_the_role_groups(tmp_path):
    env = portal_env(tmp_path / "var")
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "-v0"], env=env, check=True, cwd=ROOT, timeout=300)
    out = subprocess.run([*manage, "shell", "-c", "from django.contrib.auth.models import Group;"
                          "print(sorted(Group.objects.values_list('name', flat=True)))"],
                         env=env, check=True, cwd=ROOT, capture_output=True, text=True,
                         timeout=60).stdout
    assert out.strip().splitlines()[-1] == "['admin', 'scheduler', 'technologist', 'viewer']"


@pytest.mark.django_db
def test_an_account_without_a_role_sees_nothing(client):
    client.force_login(user_with("newcomer"))
    page = client.get(reverse("dashboard"))
    assert page.status_code == 403 and "No role yet" in page.content.decode()
    for name in ("study-list", "worklist-board", "job-list", "workitem-list"):
        assert client.get(reverse(name)).status_code == 403, name
    assert client.get(reverse("api-token")).status_code == 200  # its own token page


@pytest.mark.django_db
def test_staff_and_the_admin_group_are_admins_and_roles_add_up():
    boss = get_user_model().objects.create_user("boss", password="x", is_staff=True)
    assert roles_of(boss) == {"admin"} and allowed(boss, "ups.subscribe")
    both = user_with("both", "technologist", "scheduler")
    assert allowed(both, "archive.store") and allowed(both, "worklist.schedule")
    assert not allowed(both, "admin")
    grant(both, "admin")
    assert allowed(both, "admin")
    with pytest.raises(KeyError):
        allowed(both, "no.such.action")


def test_accounts_from_before_roles_keep_browsing(transactional_db):
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    MigrationExecutor(connection).migrate([("portal", "0001_initial")])
    User = get_user_model()
    User.objects.create(username="oldtimer")
    User.objects.create(username="oldboss", is_staff=True)
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    assert roles_of(User.objects.get(username="oldtimer")) == {"viewer"}
    assert not User.objects.get(username="oldboss").groups.exists()  # staff: admin anyway
