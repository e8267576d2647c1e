"""Indexes for the reports that read the ledger itself: by end user and by tag.

PostgreSQL only (INCLUDE, GIN), built CONCURRENTLY so a large ledger keeps taking inserts
while they build (hence not atomic).

``usage_tenant_user_time`` (tenant, end user, time) covers what a usage report sums, so
``user_ids`` is an index range per end user and ``group_by=user_id`` an index-only scan
of the tenant's entries (no heap page of the other tenants' rows is read). ``usage_tags``
answers ``tags=key:value`` (``tags @> {key: value}``).
"""

from django.db import migrations

INDEXES = {
    "usage_tenant_user_time": (
        "ON ledger_usagerecord (tenant_id, end_user, created_at) INCLUDE (prompt_tokens,"
        " completion_tokens, cached_tokens, price, status, project_id, api_key_id, model)"
    ),
    "usage_tags": ("ON ledger_usagerecord USING gin (tags jsonb_path_ops) WHERE tags IS NOT NULL"),
}


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, definition in INDEXES.items():
        schema_editor.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} {definition}")


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("ledger", "0009_attribution")]

    operations = [migrations.RunPython(create, drop, elidable=False)]
