import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def creators_from_audit_log(apps, schema_editor):
    """Existing tokens get the creator their "admin_token.issued" audit event names, so the
    rule "never more than its creator" holds for them too: a user's token follows that user
    (one whose user was deleted stops working), a token issued by another token inherits
    that token's creator, and a token without a user actor (config as code) stays the
    operator's."""
    AdminToken = apps.get_model("tenants", "AdminToken")
    AuditEvent = apps.get_model("audit", "AuditEvent")
    origin: dict[int, tuple[int | None, bool]] = {}
    for token in AdminToken.objects.order_by("id"):
        event = (
            AuditEvent.objects.filter(
                action="admin_token.issued", target_type="admin_token", target_id=str(token.id)
            )
            .order_by("id")
            .first()
        )
        if event is None or (event.actor_user_id is None and event.actor_label == "system"):
            created_by, by_user = None, False
        elif event.actor_user_id is not None:
            created_by, by_user = event.actor_user_id, True
        elif event.actor_token_id in origin:
            created_by, by_user = origin[event.actor_token_id]
        else:  # a user or token since deleted
            created_by, by_user = None, True
        origin[token.id] = (created_by, by_user)
        if by_user:
            AdminToken.objects.filter(id=token.id).update(
                created_by_id=created_by, issued_by_user=True
            )


class Migration(migrations.Migration):
    dependencies = [
        ("tenants", "0004_tenant_content_policy"),
        ("audit", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="admintoken",
            name="created_by",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddField(
            model_name="admintoken",
            name="issued_by_user",
            field=models.BooleanField(default=False),
        ),
        migrations.RunPython(creators_from_audit_log, migrations.RunPython.noop),
    ]
