from django.db import migrations

# The report index of 0006, keyed by end user before project: a month's report by end
# user (the projects added up) then groups the rows in the index's order, without a sort,
# and one by project and end user still reads it as it is (ordered by end user, then
# project). Built concurrently: the rollups keep writing the table meanwhile.
REPORT_INDEX = (
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS end_user_day_total_report_by_user"
    " ON billing_enduserdaytotal (tenant_id, bucket_start, end_user, project_id)"
    " INCLUDE (requests, prompt_tokens, completion_tokens, cached_tokens, price)"
)
OLD_INDEX = (
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS end_user_day_total_report"
    " ON billing_enduserdaytotal (tenant_id, bucket_start, project_id, end_user)"
    " INCLUDE (requests, prompt_tokens, completion_tokens, cached_tokens, price)"
)


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(REPORT_INDEX)
        schema_editor.execute("DROP INDEX CONCURRENTLY IF EXISTS end_user_day_total_report")


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(OLD_INDEX)
        schema_editor.execute(
            "DROP INDEX CONCURRENTLY IF EXISTS end_user_day_total_report_by_user"
        )


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("billing", "0006_end_user_day_total")]

    operations = [migrations.RunPython(forward, backward)]
