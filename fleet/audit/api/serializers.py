from rest_framework import serializers

from fleet.audit.models import AuditEvent


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "id", "sequence", "time", "actor", "actor_name", "change_context", "request_id", "source_address",
            "action", "target_type", "target_id", "target_repr", "scope_group_id", "scope_group_name",
            "cluster_name", "repository_name", "before", "after", "message", "prev_hash", "hash",
        ]
        read_only_fields = fields


class VerifySerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    checked = serializers.IntegerField()
    head_hash = serializers.CharField()
    first_bad_sequence = serializers.IntegerField(allow_null=True)
    reason = serializers.CharField()
    first_bad_id = serializers.IntegerField(allow_null=True)
