"""Pending audit events (issue 19): `record()` inserts an event without a sequence or hashes in the caller's
transaction, and the sealer (fleet/audit/sealing.py) chains committed pending events a batch at a time.

Existing events are all sealed and stay as they are. `sequence` becomes nullable (NULL = pending; still
unique), a partial index holds only the pending rows (the sealer's queue), and the default ordering puts
pending events after the sealed ones in the log's order. On PostgreSQL the append-only trigger lets exactly
one update through: sealing, from no sequence and empty hashes to a sequence and hashes, with every other
column unchanged. Anything else is still refused.
"""

from django.db import migrations, models

SEALING_TRIGGER = """
CREATE OR REPLACE FUNCTION audit_auditevent_append_only() RETURNS trigger AS $$
DECLARE
    unsealed audit_auditevent%ROWTYPE;
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('fleetgate.audit_archive', true) = 'on' THEN
        RETURN OLD;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.sequence IS NULL AND NEW.sequence IS NOT NULL
       AND OLD.prev_hash = '' AND OLD.hash = '' AND NEW.prev_hash <> '' AND NEW.hash <> '' THEN
        -- Sealing a pending event, nothing else: the new row with the three sealing columns put back must be
        -- the old row, column for column (whatever columns the table has).
        unsealed := NEW;
        unsealed.sequence := OLD.sequence;
        unsealed.prev_hash := OLD.prev_hash;
        unsealed.hash := OLD.hash;
        IF unsealed IS NOT DISTINCT FROM OLD THEN
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION 'audit events are append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
"""

APPEND_ONLY_TRIGGER = """
CREATE OR REPLACE FUNCTION audit_auditevent_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('fleetgate.audit_archive', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit events are append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
"""


def allow_sealing(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(SEALING_TRIGGER, params=None)


def refuse_sealing(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(APPEND_ONLY_TRIGGER, params=None)


class Migration(migrations.Migration):

    dependencies = [
        ("audit", "0002_append_only_trigger"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="auditevent",
            options={
                "ordering": [
                    models.OrderBy(models.F("sequence"), descending=True, nulls_first=True),
                    models.OrderBy(models.F("id"), descending=True),
                ]
            },
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="hash",
            field=models.CharField(blank=True, editable=False, max_length=64),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="prev_hash",
            field=models.CharField(blank=True, editable=False, max_length=64),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="sequence",
            field=models.BigIntegerField(blank=True, editable=False, null=True, unique=True),
        ),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(
                condition=models.Q(("sequence__isnull", True)), fields=["id"], name="audit_event_pending"
            ),
        ),
        migrations.RunPython(allow_sealing, refuse_sealing),
    ]
