"""Every tenant gets its default project and every key moves into it."""

from django.db import migrations


def forwards(apps, schema_editor) -> None:
    Tenant = apps.get_model("tenants", "Tenant")
    Project = apps.get_model("projects", "Project")
    ApiKey = apps.get_model("keys", "ApiKey")
    for tenant in Tenant.objects.all().iterator():
        project = Project.objects.filter(tenant=tenant, is_default=True).first()
        if project is None:
            taken = set(Project.objects.filter(tenant=tenant).values_list("name", flat=True))
            name, n = "default", 1
            while name in taken:
                n += 1
                name = f"default-{n}"
            project = Project.objects.create(
                tenant=tenant, name=name, is_default=True, allowed_models=["*"]
            )
        ApiKey.objects.filter(tenant=tenant, project__isnull=True).update(project=project)


class Migration(migrations.Migration):
    dependencies = [
        ("keys", "0005_apikey_project"),
        ("projects", "0001_initial"),
    ]

    # Reversing leaves the projects; 0005 reversed drops the keys' column.
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
