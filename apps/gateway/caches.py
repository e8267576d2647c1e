"""In-process caches of keys and the model catalog for the hot path.

Entries live at most a short TTL; Redis pub/sub invalidation makes revocations, expiry
and edits visible in every process well within a second. Misses go to the database
through Django's async ORM bridge: never on the warm path.
"""

import asyncio
import dataclasses
import logging
import random
import time
from dataclasses import dataclass, field

from asgiref.sync import sync_to_async

from apps.billing.pricing import PriceBook
from apps.catalog.models import Backend, Model
from apps.gateway.backends import BackendAdapter, UnknownBackendKind, adapter_for
from apps.gateway.protocol.bounds import DEFAULT_TOKEN_BOUNDS, TokenBounds
from apps.gateway.protocol.session import (
    AffinityKeyInvalid,
    AffinitySource,
    affinity_source_parse,
)
from apps.keys.models import ApiKey
from apps.keys.selectors import api_key_get_by_hash
from apps.limits.limiter import Layout, LimitSpec, Scope, base_scopes, model_scopes
from apps.moderation.policy import EffectivePolicy
from apps.moderation.services import content_policy_effective

MAX_NEGATIVE_ENTRIES = 10_000
EMPTY_PRICE_BOOK = PriceBook({}, {})

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: int
    tenant_id: int
    tenant_name: str
    prefix: str
    allowed_models: frozenset[str]
    expires_at: float | None
    revoked: bool
    limits: LimitSpec | None = None
    tenant_limits: LimitSpec | None = None
    # The effective content policy (tenant default merged with the key's override),
    # compiled once per load; None when every category is off (no filtering work).
    content_policy: EffectivePolicy | None = None
    name: str = ""
    # Loaded under a rotated-out secret: when its grace ends (epoch seconds). Checked on
    # every request, so the secret is refused then without any invalidation message.
    secret_valid_until: float | None = None
    # The tenant lets its callers send their own upstream key (BYOK).
    byok_allowed: bool = False
    # The tenant is prepaid: admission reserves against its balance (apps/limits/lua.py).
    prepaid: bool = False
    # The key's project: its limits, its allowlist (None: every model) narrowing the
    # key's, per-model limits in the key and in the project, and the project's limits for
    # each end user (None: none).
    project_id: int = 0
    project_limits: LimitSpec | None = None
    project_models: frozenset[str] | None = None
    model_limits: dict[str, LimitSpec] = field(default_factory=dict)
    project_model_limits: dict[str, LimitSpec] = field(default_factory=dict)
    end_user_limits: LimitSpec | None = None
    # Recorded on every request, under the request's own tags.
    default_tags: dict[str, str] = field(default_factory=dict)
    # The key's, project's and tenant's limit scopes, made once per load (base_scopes).
    scopes: tuple[Scope, ...] = ()
    # Per model name, the scopes of its limits in the key and the project (model_scopes).
    model_scopes: dict[str, tuple[Scope, ...]] = field(default_factory=dict)
    # Per model name, those scopes as admission sends them on one day (Limiter.admit
    # fills it: once per load, model and day).
    admission_plans: dict[str, Layout] = field(default_factory=dict, compare=False, repr=False)

    def may_use(self, model_name: str) -> bool:
        if self.project_models is not None and model_name not in self.project_models:
            return False
        return "*" in self.allowed_models or model_name in self.allowed_models

    @property
    def budgets(self) -> bool:
        """Whether any scope of the key has a budget (never admitted without Redis)."""
        specs = [self.limits, self.project_limits, self.tenant_limits, self.end_user_limits]
        specs += [*self.model_limits.values(), *self.project_model_limits.values()]
        return any(s is not None and s.budget_nanos is not None for s in specs)


def _specs(blocks: dict) -> dict[str, LimitSpec]:
    specs = {name: LimitSpec.from_block(block) for name, block in (blocks or {}).items()}
    return {name: spec for name, spec in specs.items() if spec.active}


def _key_info(api_key: ApiKey, key_hash: str) -> KeyInfo:
    """The key as the secret with this hash sees it (the current or the previous one)."""
    previous = key_hash != api_key.key_hash
    project = api_key.project
    models = project.allowed_models or ()
    end_user = LimitSpec.from_block(project.end_user_limits or {})
    info = KeyInfo(
        id=api_key.id,
        tenant_id=api_key.tenant_id,
        tenant_name=api_key.tenant.name,
        prefix=api_key.previous_prefix if previous else api_key.prefix,
        allowed_models=frozenset(api_key.allowed_models or ()),
        expires_at=api_key.expires_at.timestamp() if api_key.expires_at else None,
        revoked=api_key.revoked_at is not None,
        limits=LimitSpec.from_fields(api_key),
        tenant_limits=LimitSpec.from_fields(api_key.tenant),
        content_policy=content_policy_effective(api_key=api_key),
        name=api_key.name,
        secret_valid_until=api_key.previous_valid_until.timestamp() if previous else None,
        byok_allowed=api_key.tenant.byok_allowed,
        prepaid=api_key.tenant.prepaid,
        project_id=project.id,
        project_limits=LimitSpec.from_fields(project),
        project_models=None if "*" in models else frozenset(models),
        model_limits=_specs(api_key.model_limits),
        project_model_limits=_specs(project.model_limits),
        end_user_limits=end_user if end_user.active else None,
        default_tags=dict(api_key.default_tags or {}),
    )
    return dataclasses.replace(info, scopes=base_scopes(info), model_scopes=model_scopes(info))


def _load_key(key_hash: str) -> KeyInfo | None:
    api_key = api_key_get_by_hash(key_hash)
    return _key_info(api_key, key_hash) if api_key else None


class KeyCache:
    def __init__(self, ttl_s: float) -> None:
        self._ttl = ttl_s
        self._entries: dict[str, tuple[KeyInfo | None, float]] = {}
        self._negative = 0

    async def get(self, key_hash: str) -> KeyInfo | None:
        entry = self._entries.get(key_hash)
        now = time.monotonic()
        if entry is not None and now - entry[1] < self._ttl:
            return entry[0]
        info = await sync_to_async(_load_key)(key_hash)
        if info is None:
            # Bound memory against floods of random keys.
            self._negative += 1
            if self._negative > MAX_NEGATIVE_ENTRIES:
                self.clear()
        self._entries[key_hash] = (info, now)
        return info

    def invalidate(self, key_hash: str) -> None:
        self._entries.pop(key_hash, None)

    def clear(self) -> None:
        self._entries.clear()
        self._negative = 0


@dataclass(frozen=True, slots=True)
class DeploymentInfo:
    id: int
    backend: str
    # What its backend's kind means (protocol spoken, APIs offered, …): asked, never
    # the kind's name compared.
    adapter: BackendAdapter
    speaks: str  # adapter.speaks, copied: the hot path asks it on every request
    base_url: str
    headers: dict[str, str]
    upstream_model: str
    weight: int
    timeout_s: float
    connect_timeout_s: float
    reports_stop_sequence: bool = False
    # Deadlines and breaker (apps/gateway/upstream/health.py): nothing back within
    # first_byte_timeout_s (None: only timeout_s) moves on to the next deployment;
    # breaker_failures consecutive failures rest it for breaker_cooldown_s.
    first_byte_timeout_s: float | None = None
    breaker_failures: int = 3
    breaker_cooldown_s: float = 30.0
    # Its backend accepts a caller's own upstream key (BYOK); ``extra_headers`` are the
    # backend's own headers, to build that call's headers from.
    byok_allowed: bool = False
    extra_headers: dict[str, str] = field(default_factory=dict)
    # This copy carries the caller's key in ``headers`` (``with_caller_key``), where the
    # scrubbing of upstream messages finds it as it finds the backend's own.
    carries_caller_key: bool = False

    @property
    def label(self) -> str:
        return f"{self.backend}/{self.upstream_model}"

    def with_caller_key(self, credential: str) -> "DeploymentInfo":
        """This deployment for one call made with the caller's upstream key: the
        adapter's auth headers carry it instead of the backend's credential."""
        return dataclasses.replace(
            self,
            headers=self.adapter.headers(credential, self.extra_headers),
            carries_caller_key=True,
        )


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    display_name: str
    created: int
    deployments: tuple[DeploymentInfo, ...]
    # Other models' names, tried when every deployment failed / the prompt is too long
    # (upstream/fallback.py).
    fallbacks: tuple[str, ...] = ()
    context_window_fallbacks: tuple[str, ...] = ()
    bounds: TokenBounds = DEFAULT_TOKEN_BOUNDS
    # The catalog's price book (every model's rules, every tenant's rate cards).
    prices: PriceBook = EMPTY_PRICE_BOOK
    # How a request orders the deployments (apps/gateway/upstream/balancing.py) and,
    # for affinity, where its session key comes from.
    strategy: str = "weighted"
    affinity: AffinitySource | None = None

    def deployment_order(self) -> list[DeploymentInfo]:
        """Weighted random order: weight shares the load, the rest are fallbacks."""
        pool = list(self.deployments)
        if len(pool) < 2:
            return pool
        ordered = []
        while pool:
            chosen = random.choices(pool, weights=[max(d.weight, 0) + 1e-9 for d in pool])[0]
            ordered.append(chosen)
            pool.remove(chosen)
        return ordered


@dataclass(frozen=True, slots=True)
class Catalog:
    by_name: dict[str, ModelInfo]
    models: tuple[ModelInfo, ...]
    # Every price rule and rate card version: the tariff is chosen per request, so a
    # version that comes into force later needs no reload.
    prices: PriceBook = EMPTY_PRICE_BOOK


def _backend_adapter(
    backend: Backend, adapters: dict[str, BackendAdapter | None]
) -> BackendAdapter | None:
    """The backend's adapter; None (logged once per load) for a kind no adapter is
    registered for (a row written around the model's validation), whose deployments
    are then left out rather than guessed at."""
    if backend.name not in adapters:
        try:
            adapters[backend.name] = adapter_for(backend.kind)
        except UnknownBackendKind as exc:
            log.error("backend %s left out of the catalog: %s", backend.name, exc)
            adapters[backend.name] = None
    return adapters[backend.name]


def _names(value) -> tuple[str, ...]:
    """A stored name list, tolerant of a row written around its validation."""
    if not isinstance(value, list):
        return ()
    return tuple(name for name in value if isinstance(name, str))


def _extra_headers(backend: Backend) -> dict[str, str]:
    return {str(k): str(v) for k, v in (backend.extra_headers or {}).items()}


def _affinity_source(model: Model) -> AffinitySource | None:
    """The model's session-key source; an invalid setting (a row written around the
    model's validation) is logged and read as ``prefix``, the fallback of every source."""
    try:
        return affinity_source_parse(model.affinity_key)
    except AffinityKeyInvalid as exc:
        log.error(
            "model %s: affinity_key %r: %s; using prefix", model.name, model.affinity_key, exc
        )
        return affinity_source_parse("prefix")


def _load_catalog() -> Catalog:
    prices = PriceBook.load()
    by_name: dict[str, ModelInfo] = {}
    models = []
    aliases: list[tuple[str, ModelInfo]] = []
    adapters: dict[str, BackendAdapter | None] = {}
    queryset = Model.objects.filter(enabled=True).prefetch_related("deployments__backend")
    for model in queryset.order_by("name"):
        deployments = tuple(
            DeploymentInfo(
                id=d.id,
                backend=d.backend.name,
                adapter=adapter,
                speaks=adapter.speaks,
                base_url=d.backend.base_url.rstrip("/"),
                headers=adapter.headers(d.backend.credential, _extra_headers(d.backend)),
                upstream_model=d.upstream_model,
                weight=d.weight,
                timeout_s=d.backend.timeout_s,
                connect_timeout_s=d.backend.connect_timeout_s,
                first_byte_timeout_s=d.backend.first_byte_timeout_s,
                breaker_failures=d.backend.breaker_failures,
                breaker_cooldown_s=d.backend.breaker_cooldown_s,
                reports_stop_sequence=d.backend.reports_stop_sequence,
                byok_allowed=d.backend.byok_allowed,
                extra_headers=_extra_headers(d.backend) if d.backend.byok_allowed else {},
            )
            for d in model.deployments.all()
            if d.backend.enabled and (adapter := _backend_adapter(d.backend, adapters))
        )
        info = ModelInfo(
            name=model.name,
            display_name=model.display_name or model.name,
            created=int(model.created_at.timestamp()),
            deployments=deployments,
            fallbacks=_names(model.fallbacks),
            context_window_fallbacks=_names(model.context_window_fallbacks),
            bounds=TokenBounds(
                per_request=model.prompt_allowance_per_request,
                per_message=model.prompt_allowance_per_message,
                per_image=model.image_token_bound,
                max_output=model.max_output_tokens,
            ),
            prices=prices,
            strategy=str(model.strategy),
            affinity=_affinity_source(model),
        )
        models.append(info)
        by_name[model.name] = info
        aliases.extend((alias, info) for alias in model.aliases or ())
    for alias, info in aliases:
        by_name.setdefault(alias, info)  # a real name always wins over an alias
    return Catalog(by_name=by_name, models=tuple(models), prices=prices)


class CatalogCache:
    def __init__(self, ttl_s: float) -> None:
        self._ttl = ttl_s
        self._catalog: Catalog | None = None
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> Catalog:
        catalog = self._catalog
        if catalog is not None and time.monotonic() - self._loaded_at < self._ttl:
            return catalog
        async with self._lock:
            if self._catalog is None or time.monotonic() - self._loaded_at >= self._ttl:
                self._catalog = await sync_to_async(_load_catalog)()
                self._loaded_at = time.monotonic()
            return self._catalog

    async def refresh(self, older_than_s: float) -> Catalog:
        """Reload now unless the copy is fresher than older_than_s (used on a miss, so a
        model added a moment ago is found even before its invalidation message arrives)."""
        if time.monotonic() - self._loaded_at > older_than_s:
            self.clear()
        return await self.get()

    def clear(self) -> None:
        self._loaded_at = 0.0
