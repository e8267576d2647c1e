import secrets

import orjson
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from apps.gateway.demo_upstream import DEMO_MODEL
from apps.keys.models import ApiKey
from apps.keys.services import api_key_revoke
from apps.provisioning.services import config_apply
from apps.tenants.models import Membership, Tenant


class Command(BaseCommand):
    help = "Create the demo tenant, the demo backend (a toy echo model) and a fresh demo key."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--port", type=int, default=8000)

    def _demo_owner(self) -> str:
        """A staff user owning the demo tenant, with a fresh random password."""
        password = secrets.token_urlsafe(12)
        user, _ = get_user_model().objects.get_or_create(
            username="demo", defaults={"is_staff": True, "is_superuser": True}
        )
        user.set_password(password)
        user.save()
        Membership.objects.get_or_create(
            user=user, tenant=Tenant.objects.get(name="demo"), defaults={"role": "owner"}
        )
        return password

    def handle(self, *args, port: int, **options) -> None:
        # A secret is shown once: each run replaces the demo key and prints the new one.
        for key in ApiKey.objects.filter(tenant__name="demo", name="demo", revoked_at__isnull=True):
            api_key_revoke(api_key=key)
        result = config_apply(
            document={
                "backends": [
                    {
                        "name": "demo-backend",
                        "kind": "openai",
                        "base_url": f"http://127.0.0.1:{port}/demo-upstream/v1",
                    }
                ],
                "models": [
                    {
                        "name": DEMO_MODEL,
                        "aliases": ["demo"],
                        "display_name": "Tollgate demo (echo, not a real LLM)",
                        "deployments": [{"backend": "demo-backend", "upstream_model": DEMO_MODEL}],
                        "prices": [
                            {
                                "effective_from": "2026-01-01",
                                "input_per_mtok": "0.10",
                                "cached_input_per_mtok": "0.05",
                                "output_per_mtok": "0.40",
                            }
                        ],
                    }
                ],
                "tenants": [{"name": "demo", "keys": [{"name": "demo", "models": ["*"]}]}],
            }
        )
        secret = result.keys_created[0]["secret"]
        password = self._demo_owner()
        self.stdout.write(orjson.dumps(result.as_output()).decode())
        body = '{"model":"%s","messages":[{"role":"user","content":"hi"}]}' % DEMO_MODEL  # noqa: UP031
        self.stdout.write(
            f"\n  Tollgate is starting on http://127.0.0.1:{port}\n"
            f"  Demo key (shown once): {secret}\n"
            f"  Demo model: {DEMO_MODEL} (a toy echo backend, not a real LLM)\n"
            f"  Dashboard: http://127.0.0.1:{port}/dashboard/  user 'demo', password "
            f"'{password}' (staff, owner of the demo tenant; new password each run)\n"
            f"  Try: curl http://127.0.0.1:{port}/v1/chat/completions "
            f"-H 'Authorization: Bearer {secret}' -H 'Content-Type: application/json' "
            f"-d '{body}'\n"
        )
