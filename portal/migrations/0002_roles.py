"""The role groups exist on every install, and accounts made before roles existed keep the
browsing they had (viewer); new accounts get no role until an admin gives one."""

from django.db import migrations

ROLES = ("viewer", "technologist", "scheduler", "admin")


def add_roles(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    User = apps.get_model("auth", "User")
    groups = {name: Group.objects.get_or_create(name=name)[0] for name in ROLES}
    for user in User.objects.filter(is_active=True, is_staff=False, is_superuser=False):
        if not user.groups.filter(name__in=ROLES).exists():
            user.groups.add(groups["viewer"])


class Migration(migrations.Migration):
    dependencies = [
        ("portal", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [migrations.RunPython(add_roles, migrations.RunPython.noop)]
