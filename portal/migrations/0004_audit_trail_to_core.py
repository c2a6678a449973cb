"""The audit trail's table belongs to the core app now (the project package holds no models):
its rows are copied into core's table, ids kept, and the old table dropped."""

from django.core.management.color import no_style
from django.db import migrations

COLUMNS = "id, created_at, category, action, outcome, actor, source, detail"


def copy_rows(apps, schema_editor):
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO core_auditevent ({COLUMNS}) "
                       f"SELECT {COLUMNS} FROM portal_auditevent")
        Event = apps.get_model("core", "AuditEvent")
        for sql in connection.ops.sequence_reset_sql(no_style(), [Event]):
            cursor.execute(sql)


class Migration(migrations.Migration):
    dependencies = [
        ("portal", "0003_audit_categories"),
        ("core", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(copy_rows, migrations.RunPython.noop),
        migrations.DeleteModel(name="AuditEvent"),
    ]
