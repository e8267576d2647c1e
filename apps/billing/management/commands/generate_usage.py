"""Synthetic ledger data for benchmarks: `manage.py generate_usage --days 30 --per-day 1000000
--tenants 10`. PostgreSQL only (COPY). Use a separate database, never production."""

import random
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from apps.billing.pricing import PriceRule, Tariff, Tokens, pico_to_decimal, rule_from
from apps.catalog.models import Model, Price
from apps.keys.models import ApiKey
from apps.keys.services import api_key_issue
from apps.ledger.models import UsageRecord
from apps.ledger.partitions import partitions_cover
from apps.tenants.models import Tenant

MODELS = {
    "bench-small": ("0.10", "0.05", "0.40"),
    "bench-large": ("2.50", "1.25", "10.00"),
    "bench-mid": ("0.60", "0.30", "2.40"),
}
COLUMNS = (
    "request_id",
    "tenant_id",
    "api_key_id",
    "model",
    "deployment",
    "protocol",
    "endpoint",
    "stream",
    "status",
    "outcome",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "tokens_estimated",
    "latency_ms",
    "created_at",
    "ingested_at",
    "cost",
    "price",
    "cost_rule_id",
)


class Command(BaseCommand):
    help = "Generate synthetic usage records fast (COPY) for benchmarks."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--days", type=int, default=30)
        parser.add_argument("--per-day", type=int, default=1_000_000)
        parser.add_argument("--tenants", type=int, default=10)
        parser.add_argument("--keys-per-tenant", type=int, default=5)
        parser.add_argument("--end", help="first day after the data (YYYY-MM-DD), default today")
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument(
            "--keep-indexes",
            action="store_true",
            help="load with the secondary indexes in place (default: drop, load, rebuild)",
        )

    def handle(self, *args, **opts) -> None:
        if connection.vendor != "postgresql":
            raise CommandError("generate_usage needs PostgreSQL (it uses COPY)")
        rng = random.Random(opts["seed"])
        end = (
            datetime.fromisoformat(opts["end"]).replace(tzinfo=UTC)
            if opts["end"]
            else datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        )
        start = end - timedelta(days=opts["days"])
        partitions_cover(start=start, end=end)  # each month's rows straight into its partition
        rates = self._catalog(start)
        keys = self._keys(opts["tenants"], opts["keys_per_tenant"])
        # A palette of token counts with their exact costs (per model), drawn at random.
        palette = []
        for model, rate in rates.items():
            for _ in range(50):
                prompt = rng.randint(10, 8000)
                cached = rng.choice([0, 0, 0, prompt // 2])
                completion = rng.randint(1, 2000)
                status = rng.choice([200] * 48 + [429, 502])
                cost = pico_to_decimal(Tariff(rate).quote(Tokens(prompt, completion, cached)).cost)
                palette.append(
                    f"{model}\t{model}-backend/{model}\topenai\tchat.completions\tf\t{status}\t"
                    f"{'ok' if status == 200 else 'upstream_error'}\t{prompt}\t{completion}\t"
                    f"{cached}\tf\t{rng.randint(50, 3000)}\t"
                    + "{created}\t{ingested}\t"
                    + f"{cost}\t{cost}\t{rate.id}\n"
                )
        total = opts["days"] * opts["per_day"]
        started = time.monotonic()
        step = 86_400 / opts["per_day"]
        columns = ", ".join(COLUMNS)
        table = UsageRecord._meta.db_table
        with connection.cursor() as cursor:
            # Bulk-load mode for this session: the rows reference the tenants, keys and
            # prices created above, so skip the per-row FK triggers (needs a superuser).
            cursor.execute("SET synchronous_commit = off")
            try:
                cursor.execute("SET session_replication_role = replica")
            except Exception:  # noqa: BLE001 - not a superuser: load with the triggers
                self.stderr.write("not a superuser: loading with per-row FK checks (slower)")
            raw = cursor.cursor  # the psycopg cursor
            deferred = [] if opts["keep_indexes"] else self._drop_secondary_indexes(cursor)
            for day in range(opts["days"]):
                day_start = start + timedelta(days=day)
                base = day_start.timestamp()
                with raw.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    lines = []
                    for i in range(opts["per_day"]):
                        at = base + i * step
                        created = datetime.fromtimestamp(at, UTC).isoformat()
                        ingested = datetime.fromtimestamp(at + 2, UTC).isoformat()
                        tenant_id, key_id = keys[rng.randrange(len(keys))]
                        lines.append(
                            f"g{day_start:%Y%m%d}-{i}\t{tenant_id}\t{key_id}\t"
                            + rng.choice(palette).format(created=created, ingested=ingested)
                        )
                        if len(lines) == 20_000:
                            copy.write("".join(lines))
                            lines = []
                    copy.write("".join(lines))
                done = (day + 1) * opts["per_day"]
                rate_s = done / (time.monotonic() - started)
                self.stderr.write(f"{day_start:%Y-%m-%d}: {done}/{total} rows ({rate_s:,.0f}/s)")
            for definition in deferred:
                self.stderr.write(f"rebuilding: {definition}")
                cursor.execute(definition)
            cursor.execute("SET session_replication_role = DEFAULT")
            cursor.execute(f"ANALYZE {table}")
        self.stdout.write(
            f"generated {total} usage records for {opts['tenants']} tenants "
            f"from {start:%Y-%m-%d} to {end:%Y-%m-%d} in {time.monotonic() - started:.1f}s"
        )

    @staticmethod
    def _drop_secondary_indexes(cursor) -> list[str]:
        """Drop the non-unique indexes of the ledger (rebuilt after the load, much faster
        than maintaining them row by row); returns their definitions."""
        cursor.execute(
            "SELECT i.relname, pg_get_indexdef(x.indexrelid) FROM pg_index x"
            " JOIN pg_class i ON i.oid = x.indexrelid"
            " WHERE x.indrelid = %s::regclass AND NOT x.indisunique AND NOT x.indisprimary",
            [UsageRecord._meta.db_table],
        )
        found = cursor.fetchall()
        for name, _definition in found:
            cursor.execute(f'DROP INDEX "{name}"')
        # A partitioned ledger's index reads "ON ONLY <table>": rebuilt as such it would
        # cover no partition (and stay invalid), so rebuild it on the whole tree.
        return [definition.replace(" ON ONLY ", " ON ", 1) for _name, definition in found]

    def _catalog(self, since: datetime) -> dict[str, PriceRule]:
        rates = {}
        for name, (inp, cached, out) in MODELS.items():
            model, _ = Model.objects.get_or_create(name=name)
            price, _ = Price.objects.get_or_create(
                model=model,
                effective_from=since - timedelta(days=365),
                defaults={
                    "input_per_mtok": Decimal(inp),
                    "cached_input_per_mtok": Decimal(cached),
                    "output_per_mtok": Decimal(out),
                },
            )
            rates[name] = rule_from(price)
        return rates

    def _keys(self, tenants: int, per_tenant: int) -> list[tuple[int, int]]:
        keys = []
        for t in range(tenants):
            tenant, _ = Tenant.objects.get_or_create(name=f"bench-{t}")
            for k in range(per_tenant):
                key = ApiKey.objects.filter(tenant=tenant, name=f"k{k}").first()
                if key is None:
                    key, _secret = api_key_issue(tenant=tenant, name=f"k{k}", allowed_models=["*"])
                keys.append((tenant.id, key.id))
        return keys
