import yaml
from django.core.management.base import BaseCommand

from apps.provisioning.export import config_export


class Command(BaseCommand):
    help = (
        "Print tenants (settings, projects, keys) as config as code: applying the output "
        "changes nothing."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", action="append", default=[], help="only this tenant")

    def handle(self, *args, tenant: list[str], **options) -> None:
        document = config_export(tenant_names=tenant)
        self.stdout.write(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
