"""Tollgate settings, read from the environment.

With nothing set, the embedded default runs: SQLite plus in-process stand-ins for Redis
(one process only). Production sets DATABASE_URL, REDIS_URL, SECRET_KEY and
KEY_HASH_SECRET.
"""

import os
import warnings
from pathlib import Path

import dj_database_url
from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = os.environ.get("SECRET_KEY", "tollgate-insecure-dev-secret-key-change-me")
# API keys are stored as HMAC-SHA256 under this secret; it is separate from SECRET_KEY so
# that rotating the session/CSRF secret does not invalidate every customer's key.
KEY_HASH_SECRET = os.environ.get("KEY_HASH_SECRET", "tollgate-insecure-dev-key-hash-secret")
# Fernet key(s) for upstream credentials at rest; derived from SECRET_KEY when unset.
CREDENTIALS_KEY = os.environ.get("CREDENTIALS_KEY", "")

ALLOWED_HOSTS = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "*").split(",") if h.strip()]
CSRF_TRUSTED_ORIGINS = [
    o.strip() for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "csp",
    "apps.tenants",
    "apps.projects",
    "apps.keys",
    "apps.catalog",
    "apps.ledger",
    "apps.limits",
    "apps.gateway",
    "apps.provisioning",
    "apps.billing",
    "apps.wallet",
    "apps.alerts",
    "apps.payments",
    "apps.moderation",
    "apps.audit",
    "apps.dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files (dashboard CSS/JS) straight from the ASGI process, DEBUG on or off.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
]

ROOT_URLCONF = "apps.platform.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "csp.context_processors.nonce",
            ],
        },
    },
]
ASGI_APPLICATION = "apps.platform.asgi.application"

EMBEDDED = not os.environ.get("DATABASE_URL")
DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'tollgate.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Django's native psycopg pool; CONN_MAX_AGE must stay 0 with it.
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": env_int("DB_POOL_MAX", 10),
        "timeout": 10,
    }
    DATABASES["default"]["TEST"] = {"NAME": os.environ.get("TEST_DB_NAME", "test_tollgate")}
else:
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Test runs only (the suite sets it for itself and the servers it starts): a fast password
# hash, since PBKDF2's deliberate cost per user made up a large share of the suite's time.
# A deployment never sets it and keeps Django's default hashers.
if os.environ.get("TOLLGATE_TEST_FAST_PASSWORD_HASH") == "1":
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Empty REDIS_URL = the in-process stand-in (fakeredis): one process only.
REDIS_URL = os.environ.get("REDIS_URL", "")
# The test suite's parallel workers (pytest-xdist, worker gwN) share this machine's Redis:
# each takes the database N below the one named (the test database is per worker already).
_TEST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if _TEST_WORKER.startswith("gw") and REDIS_URL.startswith("redis://"):
    _base, _, _db = REDIS_URL.rpartition("/")
    if _db.isdigit() and "//" in _base:
        REDIS_URL = f"{_base}/{(int(_db) - int(_TEST_WORKER[2:])) % 16}"
# redis+cluster://host:port[,host:port…] names a Redis Cluster (the nodes to learn the slot
# map from); redis+sentinel://host:port[,host:port…]/<service>[/db] a primary Sentinel
# fails over; redis:// and rediss:// a single server (apps/core/redis.py).
REDIS_CLUSTER = REDIS_URL.startswith("redis+cluster://")
REDIS_SENTINEL = REDIS_URL.startswith("redis+sentinel://")
# Kombu cannot put Celery's broker on a cluster: a cluster deployment names its broker.
if REDIS_CLUSTER and not os.environ.get("CELERY_BROKER_URL"):
    raise ImproperlyConfigured(
        "REDIS_URL names a Redis Cluster; Celery's broker cannot live on one: set"
        " CELERY_BROKER_URL (a single Redis, e.g. redis://broker-host:6379/0)"
    )
CELERY_BROKER_URL = os.environ.get(
    "CELERY_BROKER_URL", (REDIS_URL if not REDIS_SENTINEL else "") or "memory://"
)
if REDIS_SENTINEL and not os.environ.get("CELERY_BROKER_URL"):
    raise ImproperlyConfigured(
        "REDIS_URL names a Sentinel service: set CELERY_BROKER_URL (kombu's own sentinel://"
        " URL, or a single Redis)"
    )
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Beat stamps Redis on every tick (apps/core/beat.py) so /readyz can tell it is running;
# the loop wakes at least this often even when nothing is due.
CELERY_BEAT_SCHEDULER = "apps.core.beat:HeartbeatScheduler"
CELERY_BEAT_MAX_LOOP_INTERVAL = 5
# /readyz answers 503 when the oldest usage event not yet ingested is older than this, or
# beat has not ticked for this long (or never did). 0 = report only, never fail on it.
PIPELINE_MAX_INGEST_LAG_S = float(os.environ.get("PIPELINE_MAX_INGEST_LAG_S", "120"))
PIPELINE_MAX_BEAT_SILENCE_S = float(os.environ.get("PIPELINE_MAX_BEAT_SILENCE_S", "60"))
CELERY_BEAT_SCHEDULE = {
    "ledger-ingest": {"task": "ledger.ingest", "schedule": 1.0},
    "ledger-partitions": {"task": "ledger.partitions", "schedule": 3600.0},
    "limits-reconcile-budgets": {"task": "limits.reconcile_budgets", "schedule": 300.0},
    "limits-reconcile-balances": {"task": "limits.reconcile_balances", "schedule": 300.0},
    # Billing (apps/billing): rollups each minute, statements hourly, reconciliation daily.
    "billing-rollups": {"task": "billing.rollups", "schedule": 60.0},
    "billing-statements": {"task": "billing.statements", "schedule": 3600.0},
    "billing-reconcile": {"task": "billing.reconcile", "schedule": 86400.0},
    # Alerts (apps/alerts): thresholds, then the webhook/email outbox sweep (retries).
    "alerts-evaluate": {"task": "alerts.evaluate", "schedule": 15.0},
    "alerts-deliver-due": {"task": "alerts.deliver_due", "schedule": 5.0},
    # Payments (apps/payments): auto-recharge of prepaid balances (one query when nobody has it on).
    "payments-auto-recharge": {"task": "payments.auto_recharge", "schedule": 15.0},
}
# A beat that runs only some of the schedules (comma-separated names above); default all.
_beat_only = {n.strip() for n in os.environ.get("CELERY_BEAT_ONLY", "").split(",") if n.strip()}
if _unknown := sorted(_beat_only - set(CELERY_BEAT_SCHEDULE)):
    raise ImproperlyConfigured(f"CELERY_BEAT_ONLY names no schedule: {', '.join(_unknown)}")
if _beat_only:
    CELERY_BEAT_SCHEDULE = {n: e for n, e in CELERY_BEAT_SCHEDULE.items() if n in _beat_only}

# Alerts: webhooks and email (apps/alerts). Email goes through Django's backend: SMTP when
# EMAIL_HOST is set, else the console (the embedded default prints alerts to stdout).
ALERTS_WEBHOOK_TIMEOUT_S = float(os.environ.get("ALERTS_WEBHOOK_TIMEOUT_S", "10"))
ALERTS_WEBHOOK_RETRY_HOURS = float(os.environ.get("ALERTS_WEBHOOK_RETRY_HOURS", "24"))
# Queue a delivery task as soon as an alert commits (a worker exists only with Redis);
# the alerts.deliver_due sweep sends whatever is due either way.
ALERTS_DELIVER_ON_COMMIT = env_bool("ALERTS_DELIVER_ON_COMMIT", bool(REDIS_URL))
EMAIL_HOST = os.environ.get("EMAIL_HOST", "")
EMAIL_BACKEND = os.environ.get(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend",
)
EMAIL_PORT = env_int("EMAIL_PORT", 587)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "Tollgate <alerts@localhost>")

# Billing
# Rollups re-read records ingested this long before their last run (open transactions).
BILLING_ROLLUP_OVERLAP_S = env_int("BILLING_ROLLUP_OVERLAP_S", 300)
# A month's statements close this long after the month ends (late events still land in it).
BILLING_STATEMENT_CLOSE_GRACE_H = env_int("BILLING_STATEMENT_CLOSE_GRACE_H", 6)
BILLING_RECONCILE_DAYS = env_int("BILLING_RECONCILE_DAYS", 2)

# Payments through Stripe (apps/payments). Top-ups and auto-recharge are on only when both
# the secret key and the webhook signing secret are set; staff grants work either way.
STRIPE_SECRET_KEY = os.environ.get("STRIPE_SECRET_KEY", "")
STRIPE_WEBHOOK_SECRET = os.environ.get("STRIPE_WEBHOOK_SECRET", "")
# Where the stripe library sends its API calls; empty = Stripe itself (tests: a local fake).
STRIPE_API_BASE = os.environ.get("STRIPE_API_BASE", "")
# A webhook whose signature timestamp is older than this is refused (replays).
STRIPE_WEBHOOK_TOLERANCE_S = env_int("STRIPE_WEBHOOK_TOLERANCE_S", 300)
# The top-up form posts here and is redirected to Stripe's hosted Checkout page: the CSP's
# form-action must allow that origin (tests: the fake Stripe's).
STRIPE_CHECKOUT_ORIGIN = os.environ.get("STRIPE_CHECKOUT_ORIGIN", "https://checkout.stripe.com")
PAYMENTS_CURRENCY = os.environ.get("PAYMENTS_CURRENCY", "usd").lower()
# Bounds of one top-up and of an auto-recharge amount, in PAYMENTS_CURRENCY.
PAYMENTS_TOPUP_MIN = os.environ.get("PAYMENTS_TOPUP_MIN", "5")
PAYMENTS_TOPUP_MAX = os.environ.get("PAYMENTS_TOPUP_MAX", "10000")

# Management API (/api/): tenant admin tokens (tga-…) or a staff session.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.tenants.authentication.AdminTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Database errors caused by input (out-of-range values, uniqueness races) are 400/409.
    "EXCEPTION_HANDLER": "apps.api.errors.exception_handler",
}
# OpenAPI schema (/api/schema/) and docs (/api/docs/), served without any CDN.
SPECTACULAR_SETTINGS = {
    "TITLE": "Tollgate management API",
    "DESCRIPTION": (
        "Tenant keys, admin tokens, members, audit log, settings and usage reports; "
        "staff: tenants, backends, models, deployments, prices and the metering pipeline. "
        "Authenticate with a tenant admin token (`Authorization: Bearer tga-…`) or a "
        "staff session; inference keys (`tg-…`) are refused."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "RoleEnum": "apps.tenants.models.Membership.Role",
        "ProjectRoleEnum": "apps.projects.models.ProjectMembership.Role",
        "BudgetPeriodEnum": "apps.limits.fields.BudgetPeriod",
        "BackendKindEnum": "apps.gateway.backends.backend_kind_choices",
    },
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Gateway
# The toy echo backend for the embedded default; never on in production.
DEMO_UPSTREAM = env_bool("DEMO_UPSTREAM", False)
GATEWAY_MAX_BODY_BYTES = env_int("GATEWAY_MAX_BODY_BYTES", 10 * 1024 * 1024)
GATEWAY_MAX_ATTEMPTS = env_int("GATEWAY_MAX_ATTEMPTS", 3)
# An Anthropic stream translated from a silent backend (a model thinking) gets a `ping`
# event after this many idle seconds, as Anthropic sends, so that proxies keep it open.
GATEWAY_STREAM_PING_S = float(os.environ.get("GATEWAY_STREAM_PING_S", "10"))
GATEWAY_KEY_CACHE_TTL_S = float(os.environ.get("GATEWAY_KEY_CACHE_TTL_S", "30"))
# Upstream connections a process keeps open at once; 0: no bound (the default: a bound
# here would be a concurrency limit nobody sees; limits are the keys' max_concurrent).
GATEWAY_UPSTREAM_POOL_SIZE = env_int("GATEWAY_UPSTREAM_POOL_SIZE", 0)
# A process refuses new /v1 POSTs (503, Anthropic 529 overloaded_error, Retry-After) when
# it holds this many requests already (0: half its open-file limit, each stream holding
# two sockets) or its event loop runs this many ms late (0: no lag bound). Streams open
# go on, slower: overload slows chunks down, never drops a stream.
GATEWAY_MAX_IN_FLIGHT = env_int("GATEWAY_MAX_IN_FLIGHT", 0)
GATEWAY_MAX_LOOP_LAG_MS = env_int("GATEWAY_MAX_LOOP_LAG_MS", 2000)
# If Redis is unreachable, refuse (503) rather than admit unchecked. True admits requests
# of keys without a budget unchecked; budgets always fail closed.
LIMITS_FAIL_OPEN = env_bool("LIMITS_FAIL_OPEN", False)
# TPM reservations scale a model's prompt estimates by their observed drift (reported /
# estimated prompt tokens, token-weighted over about PROMPT_ESTIMATE_WINDOW requests),
# held within [MIN, MAX] (MIN is at least 1), once the model has
# PROMPT_ESTIMATE_MIN_OBSERVATIONS in the process (apps/gateway/estimates.py). MAX=1
# turns it off.
PROMPT_ESTIMATE_SCALE_MIN = os.environ.get("PROMPT_ESTIMATE_SCALE_MIN", "1.0")
PROMPT_ESTIMATE_SCALE_MAX = os.environ.get("PROMPT_ESTIMATE_SCALE_MAX", "2.0")
PROMPT_ESTIMATE_MIN_OBSERVATIONS = env_int("PROMPT_ESTIMATE_MIN_OBSERVATIONS", 20)
PROMPT_ESTIMATE_WINDOW = env_int("PROMPT_ESTIMATE_WINDOW", 200)
LEDGER_STREAM = os.environ.get("LEDGER_STREAM", "tollgate:usage")
# Tenants are spread over this many ledger shards (shard = tenant id % LEDGER_SHARDS): the
# keys a tenant's admission and settlement touch and its usage stream share one hash tag
# ({s<shard>}), so each Lua script stays in one cluster slot (apps/core/shards.py). 1 on a
# single Redis keeps the untagged names and one stream; a cluster takes 16 unless told.
LEDGER_SHARDS = env_int("LEDGER_SHARDS", 16 if REDIS_CLUSTER else 1)
if LEDGER_SHARDS < 1:
    raise ImproperlyConfigured(f"LEDGER_SHARDS must be at least 1 (got {LEDGER_SHARDS})")
LEDGER_GROUP = "ingest"
# Where a web process keeps usage events it could not append to Redis, until it can.
LEDGER_SPOOL_DIR = os.environ.get(
    "LEDGER_SPOOL_DIR",
    str(BASE_DIR / "var" / ("spool" + (f"-{_TEST_WORKER}" if _TEST_WORKER else ""))),
)
# An entry pending this long belongs to a dead consumer and is reclaimed.
LEDGER_RECLAIM_IDLE_MS = env_int("LEDGER_RECLAIM_IDLE_MS", 60_000)
LEDGER_BATCH_SIZE = env_int("LEDGER_BATCH_SIZE", 2000)
# PostgreSQL's ledger is split by month (apps/ledger/partitions.py): the ledger.partitions
# job keeps this many months ahead, and drops months older than LEDGER_RETENTION_MONTHS
# once rolled up and billed on closed statements (unset: keep forever).
LEDGER_PARTITIONS_AHEAD = env_int("LEDGER_PARTITIONS_AHEAD", 3)


def _retention_months() -> int | None:
    value = os.environ.get("LEDGER_RETENTION_MONTHS", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ImproperlyConfigured(
            f"LEDGER_RETENTION_MONTHS must be a whole number of months >= 1 (got {value!r})"
        )
    return int(value)


LEDGER_RETENTION_MONTHS = _retention_months()

# Sign-in: 5 failures per username and IP lock that pair for 15 minutes (apps/tenants/signin.py).
AUTHENTICATION_BACKENDS = ["apps.tenants.signin.ThrottledModelBackend"]
SIGNIN_MAX_FAILURES = env_int("SIGNIN_MAX_FAILURES", 5)
SIGNIN_LOCK_SECONDS = env_int("SIGNIN_LOCK_SECONDS", 15 * 60)

# Security headers, always: no framing, no MIME sniffing, HttpOnly session cookie, and a
# content security policy (django-csp): same-origin only; an inline <script>/<style> needs
# the request's nonce (templates: nonce="{{ CSP_NONCE }}").
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF, NONCE],
        "img-src": [SELF, "data:"],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF, STRIPE_CHECKOUT_ORIGIN] if STRIPE_SECRET_KEY else [SELF],
        "frame-ancestors": [NONE],
    },
}
# Production (TOLLGATE_PRODUCTION=1, DEBUG off): cookies only over HTTPS and HSTS.
PRODUCTION = env_bool("TOLLGATE_PRODUCTION", False) and not DEBUG
if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
    # Behind a TLS-terminating proxy, SECURE_SSL_REDIRECT=1 sends plain http to https
    # (health checks and metrics stay reachable over http).
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
# "HTTP_X_FORWARDED_PROTO,https": trust the proxy's header for request.is_secure().
if os.environ.get("SECURE_PROXY_SSL_HEADER"):
    _header, _, _value = os.environ["SECURE_PROXY_SSL_HEADER"].partition(",")
    SECURE_PROXY_SSL_HEADER = (_header.strip(), _value.strip() or "https")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# WhiteNoise serves the apps' static files from their folders too, so the dashboard works
# without a collectstatic step (production may still collect them into STATIC_ROOT).
WHITENOISE_USE_FINDERS = True
# …and STATIC_ROOT need not exist (WhiteNoise would warn at every start).
warnings.filterwarnings("ignore", message="No directory at", category=UserWarning)

# Dashboard sign-in (Django auth).
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/dashboard/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    # httpx logs every request's full URL at INFO; a webhook URL may carry a token.
    "loggers": {"httpx": {"level": "WARNING"}},
}
