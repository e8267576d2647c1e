import sys
from pathlib import Path

import orjson
import yaml
from django.core.management.base import BaseCommand, CommandError

from apps.provisioning.services import ConfigError, config_apply


class Command(BaseCommand):
    help = "Create or update backends, models, prices, tenants and keys from a YAML file."

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", help="YAML file, or - for standard input")

    def handle(self, *args, file: str, **options) -> None:
        try:
            text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc}") from None
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise CommandError(f"{file} is not valid YAML: {exc}") from None
        try:
            result = config_apply(document=document)
        except ConfigError as exc:
            raise CommandError(f"invalid configuration, nothing changed: {exc}") from None
        for change in result.changes:
            self.stderr.write(change)
        if not result.changes:
            self.stderr.write("no changes")
        self.stdout.write(orjson.dumps(result.as_output()).decode())
