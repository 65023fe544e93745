"""Django settings for Fleetgate, read from environment variables with working defaults.

The defaults are the embedded set-up (`make run`, `make test`): a SQLite file, a SQLite broker (kombu's
SQLAlchemy transport) for a real Celery worker, the in-process Rego engine and sandbox clusters. Production
sets the variables documented in `.env.example` (PostgreSQL, Redis, OPA, a fixed secret key and encryption
key).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from cryptography.fernet import Fernet

from fleet.core.urlguard import DEFAULT_DENY_CIDRS, parse_networks
from fleet.env import env_bool, env_int, env_list, env_str, persistent_secret, random_key
from fleet.observability import multiproc

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("FLEETGATE_VAR_DIR", str(BASE_DIR / "var"))).resolve()

DEBUG = env_bool("FLEETGATE_DEBUG", False)
SECRET_KEY = env_str("FLEETGATE_SECRET_KEY") or persistent_secret(VAR_DIR / "secret.key", random_key)
ALLOWED_HOSTS = env_list("FLEETGATE_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("FLEETGATE_CSRF_TRUSTED_ORIGINS", [])

# Fernet keys for credentials at rest. Several comma-separated keys allow rotation: the first encrypts,
# all decrypt (`manage.py rotate_credentials` re-encrypts with the first).
FLEETGATE_ENCRYPTION_KEYS = env_list("FLEETGATE_ENCRYPTION_KEYS", []) or [
    persistent_secret(VAR_DIR / "encryption.key", lambda: Fernet.generate_key().decode())
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "axes",
    "fleet.core",
    "fleet.access",
    "fleet.audit",
    "clusters",
    "fleet.sources",
    "policies",
    "fleet.rollouts",
    "fleet.notifications",
    "fleet.observability",
    "fleet.web",
    "fleet.demo",
]

MIDDLEWARE = [
    # HTTP request metrics (django-prometheus): first, and after all but axes, to time request and view.
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Before anything reads a body: 413 over the size limit (JSON under /api/), chunked bodies de-chunked.
    "fleet.core.request_body.RequestBodyLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # After authentication, so that the audit context names the signed-in user of UI and session-API writes.
    # (API tokens are authenticated later, by DRF in the view: fleet.access.authentication sets it then.)
    "fleet.core.middleware.RequestContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a locked-out login into the lockout page
]

ROOT_URLCONF = "fleet.urls"
WSGI_APPLICATION = "fleet.wsgi.application"
ASGI_APPLICATION = "fleet.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "fleet" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "fleet.web.context_processors.navigation",
            ],
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'fleetgate.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0))}
# PostgreSQL: a connection pool per process (psycopg_pool through Django's own "pool" option). Its size
# bounds the connections a process opens, however many threads serve requests at once (a web tier with
# many threads for pull-mode agents' long polls); a thread that finds the pool empty waits up to
# DATABASE_POOL_TIMEOUT seconds. 0 (the default) opens a connection per request as before. The pool
# replaces persistent connections: DATABASE_CONN_MAX_AGE must stay 0 with it.
DATABASE_POOL_MAX_SIZE = env_int("DATABASE_POOL_MAX_SIZE", 0)
if DATABASE_POOL_MAX_SIZE and DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": min(2, DATABASE_POOL_MAX_SIZE),
        "max_size": DATABASE_POOL_MAX_SIZE,
        "timeout": env_int("DATABASE_POOL_TIMEOUT", 30),
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A web process, a worker and beat share the file: wait for locks, take the write lock up front
    # (no deadlock on upgrade), and let readers run beside the writer.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not memory: integration tests start worker processes that must see the test database.
    DATABASES["default"]["TEST"] = {
        # One file per test run (several runs may share a machine).
        "NAME": env_str("FLEETGATE_TEST_SQLITE", "") or str(VAR_DIR / f"test-{os.getpid()}.sqlite3")
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# django-axes refuses a login for a user name or a client address with too many recent failures (the web
# UI's and the admin's login alike); its backend must come first. Attempts are kept in the database.
# Password sign-in goes through LocalPasswordBackend (refused when FLEETGATE_LOCAL_LOGIN is off, except
# for the break-glass users), single sign-on through OIDCBackend (fleet/access/oidc; off without an issuer).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "fleet.access.backends.LocalPasswordBackend",
    "fleet.access.oidc.backend.OIDCBackend",
]
AXES_FAILURE_LIMIT = env_int("FLEETGATE_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("FLEETGATE_LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # either one reaching the limit locks the login out
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "web/login_locked.html"
AXES_DISABLE_ACCESS_LOG = True  # successful logins are not kept (only failures count)
# Single sign-on with an OpenID Connect provider (docs/operations.md, "Single sign-on"); off while
# FLEETGATE_OIDC_ISSUER is empty. Local (password) accounts can be switched off with FLEETGATE_LOCAL_LOGIN.
FLEETGATE_OIDC_ISSUER = env_str("FLEETGATE_OIDC_ISSUER", "")
FLEETGATE_OIDC_CLIENT_ID = env_str("FLEETGATE_OIDC_CLIENT_ID", "")
FLEETGATE_OIDC_CLIENT_SECRET = env_str("FLEETGATE_OIDC_CLIENT_SECRET", "")
FLEETGATE_OIDC_TOKEN_AUTH = env_str("FLEETGATE_OIDC_TOKEN_AUTH", "client_secret_basic")  # or ..._post
FLEETGATE_OIDC_SCOPES = env_str("FLEETGATE_OIDC_SCOPES", "openid email profile groups")
FLEETGATE_OIDC_USERNAME_CLAIM = env_str("FLEETGATE_OIDC_USERNAME_CLAIM", "preferred_username")
FLEETGATE_OIDC_GROUPS_CLAIM = env_str("FLEETGATE_OIDC_GROUPS_CLAIM", "groups")
FLEETGATE_OIDC_GROUPS_PREFIX = env_str("FLEETGATE_OIDC_GROUPS_PREFIX", "")  # "": every group is mapped
FLEETGATE_OIDC_API_AUDIENCES = env_list("FLEETGATE_OIDC_API_AUDIENCES", [])  # []: the client id
FLEETGATE_OIDC_ALGORITHMS = env_list("FLEETGATE_OIDC_ALGORITHMS", ["RS256", "ES256"])
FLEETGATE_OIDC_LEEWAY = env_int("FLEETGATE_OIDC_LEEWAY", 30)  # seconds of clock skew allowed on exp/iat
FLEETGATE_OIDC_TIMEOUT = env_int("FLEETGATE_OIDC_TIMEOUT", 10)  # seconds per request to the provider
FLEETGATE_OIDC_BUTTON_LABEL = env_str("FLEETGATE_OIDC_BUTTON_LABEL", "Sign in with single sign-on")
FLEETGATE_LOCAL_LOGIN = env_bool("FLEETGATE_LOCAL_LOGIN", True)
FLEETGATE_BREAK_GLASS_USERS = env_list("FLEETGATE_BREAK_GLASS_USERS", [])
LOGIN_URL = "web:login"
LOGIN_REDIRECT_URL = "web:dashboard"
LOGOUT_REDIRECT_URL = "web:login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("FLEETGATE_TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

# HTTPS by default: production is secure unless DEBUG is on or a variable turns a part off. `make run` and
# the test settings turn them off explicitly (plain http on 127.0.0.1). Behind a TLS-terminating proxy set
# FLEETGATE_PROXY_SSL_HEADER (e.g. HTTP_X_FORWARDED_PROTO=https) and make the proxy overwrite that header.
SECURE_SSL_REDIRECT = env_bool("FLEETGATE_SSL_REDIRECT", not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]  # container health checks call it over http from inside
SECURE_HSTS_SECONDS = env_int("FLEETGATE_HSTS_SECONDS", 0 if DEBUG else 365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("FLEETGATE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("FLEETGATE_HSTS_PRELOAD", True)
_proxy_ssl_header = env_str("FLEETGATE_PROXY_SSL_HEADER", "")
if _proxy_ssl_header:
    _header, _, _value = _proxy_ssl_header.partition("=")
    SECURE_PROXY_SSL_HEADER = (_header.strip(), _value.strip() or "https")
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("FLEETGATE_SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("FLEETGATE_MAX_REQUEST_BYTES", 5 * 1024 * 1024)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "fleet.access.oidc.authentication.OIDCBearerAuthentication",  # JWTs from the OIDC provider
        "fleet.access.authentication.APITokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "fleet.core.api.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "fleet.core.api.filtering.StrictFilterBackend",
        "rest_framework.filters.OrderingFilter",
        "rest_framework.filters.SearchFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "fleet.core.api.schema.FleetAutoSchema",
    "EXCEPTION_HANDLER": "fleet.core.api.exceptions.exception_handler",
    # A JSON API: bodies are JSON (labels, selectors and values are objects that forms cannot carry). The
    # policy import action also takes multipart file uploads, declared on that action. (Fleetgate's JSON
    # parser: a JSON nesting bomb is a 400, not a RecursionError.)
    "DEFAULT_PARSER_CLASSES": ["fleet.core.api.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]
    + (["rest_framework.renderers.BrowsableAPIRenderer"] if DEBUG else []),
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Fleetgate API",
    "DESCRIPTION": "Multi-cluster GitOps fleet manager with a policy gate.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SCHEMA_PATH_PREFIX": "/api/",
    # OpenAPI 3.1 (JSON Schema 2020-12): maps of labels can say what their keys look like (propertyNames).
    "OAS_VERSION": "3.1.0",
    "ENUM_NAME_OVERRIDES": {
        "RolloutStateEnum": "fleet.rollouts.choices.RolloutState",
        "ClusterSyncStateEnum": "fleet.rollouts.choices.SyncState",
        "GateDecisionEnum": "fleet.rollouts.choices.Decision",
        "ApprovalDecisionEnum": "fleet.rollouts.choices.ApprovalDecision",
        "BindingEnforcementEnum": "policies.choices.BindingEnforcement",
        "NotificationEventEnum": "fleet.notifications.choices.EventType",
        # a leg's plan (fleet/rollouts/api/plans.py)
        "PlanActionEnum": "fleet.rollouts.api.plans.PLAN_ACTIONS",
        "SyncPhaseEnum": "clusters.connector.hooks.PHASES",
        "HookKindEnum": "fleet.rollouts.api.plans.HOOK_KINDS",
        "HelmOperationEnum": "fleet.rollouts.api.plans.HELM_OPERATIONS",
    },
}

# Celery. The default broker is kombu's SQLAlchemy transport on a SQLite file under var/: a real worker
# process with no server to run, and every publish and fetch is one SQLite transaction, so a process killed at
# any moment (web, worker or beat) leaves a whole message or none (the filesystem transport left half-written
# message files that killed the worker that read them). Production sets CELERY_BROKER_URL: Redis, RabbitMQ.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "") or f"sqla+sqlite:///{VAR_DIR / 'broker.sqlite3'}"
if CELERY_BROKER_URL.startswith(("sqla+sqlite:", "sqlalchemy+sqlite:")):
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    # Passed to sqlalchemy.create_engine(): web, worker and beat share the file; wait for its lock rather than
    # fail a publish with "database is locked" (kombu takes the write lock up front when it fetches).
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
        "connect_args": {"timeout": env_int("CELERY_BROKER_SQLITE_TIMEOUT", 30)},
    }
elif CELERY_BROKER_URL.startswith("filesystem://"):
    # Still accepted when asked for explicitly; not crash-safe (see above).
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600)}
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", "") or None
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Periodic tasks (installed into django-celery-beat's database schedule when beat starts).
CELERY_BEAT_SCHEDULE = {
    "sources-poll": {"task": "fleet.sources.poll_repositories", "schedule": 10.0},
    "clusters-check": {
        "task": "clusters.check_all_clusters",
        "schedule": float(env_int("FLEETGATE_CLUSTER_CHECK_INTERVAL", 60)),
    },
    # Legs whose lease expired (a lost worker or agent), stalled preparations, active rollouts advanced.
    "rollouts-reconcile": {
        "task": "fleet.rollouts.reconcile",
        "schedule": float(max(1, env_int("FLEETGATE_RECONCILE_INTERVAL", 60))),
    },
    "rollouts-drift": {
        "task": "fleet.rollouts.check_drift",
        "schedule": float(env_int("FLEETGATE_DRIFT_INTERVAL", 300)),
    },
    # Bindings whose dry run has ended switch to their scheduled enforcement (docs/policies.md).
    "policies-enforce-scheduled": {"task": "policies.enforce_scheduled_bindings", "schedule": 60.0},
    # Impact preview jobs that stopped midway (worker lost) are marked failed (docs/policies.md).
    "policies-reap-previews": {"task": "policies.reap_stalled_previews", "schedule": 60.0},
    # Sync windows that opened, waivers about to expire (each recorded once), lost deliveries queued again.
    "notifications-scan": {
        "task": "fleet.notifications.scan",
        "schedule": float(env_int("FLEETGATE_NOTIFY_SCAN_INTERVAL", 60)),
    },
    # Audit events whose commit hook did not seal them into the hash chain (docs/audit.md, Sealing).
    "audit-seal": {
        "task": "fleet.audit.seal",
        "schedule": float(max(1, env_int("FLEETGATE_AUDIT_SEAL_INTERVAL", 10))),
    },
}

# Fleetgate's own settings.
FLEETGATE_REGO_ENGINE = env_str("FLEETGATE_REGO_ENGINE", "regorus")  # "regorus" (in-process) or "opa"
FLEETGATE_OPA_URL = env_str("FLEETGATE_OPA_URL", "http://127.0.0.1:8181")
FLEETGATE_REGO_TIMEOUT = env_int("FLEETGATE_REGO_TIMEOUT", 10)  # seconds per evaluation
# The regorus worker pool (policies/engine/regorus_pool.py reads the same names when it starts).
FLEETGATE_REGO_WORKERS = env_int("FLEETGATE_REGO_WORKERS", os.cpu_count() or 2)
FLEETGATE_REGO_MEMORY_MB = env_int("FLEETGATE_REGO_MEMORY_MB", 1024)
FLEETGATE_GIT_CACHE = Path(env_str("FLEETGATE_GIT_CACHE", str(VAR_DIR / "git")))
# Helm charts from index repositories and OCI registries (fleet/sources/charts): the cache keyed by digest,
# limits, an extra CA file trusted for every chart repository, and a switch that forbids fetching at all.
FLEETGATE_CHART_CACHE = Path(env_str("FLEETGATE_CHART_CACHE", str(VAR_DIR / "charts")))
FLEETGATE_CHART_MAX_BYTES = env_int("FLEETGATE_CHART_MAX_BYTES", 20 * 1024 * 1024)
FLEETGATE_CHART_INDEX_MAX_BYTES = env_int("FLEETGATE_CHART_INDEX_MAX_BYTES", 64 * 1024 * 1024)
FLEETGATE_CHART_TIMEOUT = env_int("FLEETGATE_CHART_TIMEOUT", 30)  # seconds per connection/read
FLEETGATE_CHART_CA_FILE = env_str("FLEETGATE_CHART_CA_FILE", "")
FLEETGATE_CHART_OFFLINE = env_bool("FLEETGATE_CHART_OFFLINE", False)
FLEETGATE_API_TOKEN_DAYS = env_int("FLEETGATE_API_TOKEN_DAYS", 90)
FLEETGATE_AUDIT_RETENTION_DAYS = env_int("FLEETGATE_AUDIT_RETENTION_DAYS", 365)
# PostgreSQL: a commit that recorded audit events wakes a per-process background thread that seals them into
# the chain (docs/audit.md, Sealing); 0 seals in the committing thread instead. SQLite always seals there.
FLEETGATE_AUDIT_SEAL_BACKGROUND = env_bool("FLEETGATE_AUDIT_SEAL_BACKGROUND", True)
FLEETGATE_ALLOW_FILE_REPOSITORIES = env_bool("FLEETGATE_ALLOW_FILE_REPOSITORIES", True)
# Networks Fleetgate never contacts through a user-given URL (repositories, cluster API servers): link-local
# and cloud metadata addresses by default. Loopback and private networks stay allowed.
FLEETGATE_URL_DENY_CIDRS = [
    str(net) for net in parse_networks(env_list("FLEETGATE_URL_DENY_CIDRS", list(DEFAULT_DENY_CIDRS)))
]
FLEETGATE_WEBHOOK_MAX_BYTES = env_int("FLEETGATE_WEBHOOK_MAX_BYTES", 5 * 1024 * 1024)
# Webhook deliveries allowed per repository and per source address ("120/min"; empty: no limit), counted in
# the default cache; a delivery id or body is refused as a replay for FLEETGATE_WEBHOOK_REPLAY_WINDOW
# seconds (and a GitHub push older than that); rejections are audited once per repository and reason per
# FLEETGATE_WEBHOOK_REJECTION_AUDIT_WINDOW seconds, with a count of the others.
FLEETGATE_WEBHOOK_RATE_PER_REPOSITORY = env_str("FLEETGATE_WEBHOOK_RATE_PER_REPOSITORY", "120/min")
FLEETGATE_WEBHOOK_RATE_PER_ADDRESS = env_str("FLEETGATE_WEBHOOK_RATE_PER_ADDRESS", "600/min")
FLEETGATE_WEBHOOK_REPLAY_WINDOW = env_int("FLEETGATE_WEBHOOK_REPLAY_WINDOW", 3600)
FLEETGATE_WEBHOOK_REJECTION_AUDIT_WINDOW = env_int("FLEETGATE_WEBHOOK_REJECTION_AUDIT_WINDOW", 300)
FLEETGATE_CLUSTER_CHECK_INTERVAL = env_int("FLEETGATE_CLUSTER_CHECK_INTERVAL", 60)
# Pull mode (docs/clusters.md "Pull mode", docs/api.md "Pull mode: the agent API"): a bootstrap token's
# lifetime, an agent credential's (the agent rotates at half of it), the longest a work poll waits (seconds)
# and how often an agent reports live state, health and drift; request bodies of agents up to 16 MiB.
FLEETGATE_AGENT_BOOTSTRAP_TTL = env_int("FLEETGATE_AGENT_BOOTSTRAP_TTL", 3600)
FLEETGATE_AGENT_CREDENTIAL_TTL = env_int("FLEETGATE_AGENT_CREDENTIAL_TTL", 7 * 24 * 3600)
FLEETGATE_AGENT_POLL_WAIT = env_int("FLEETGATE_AGENT_POLL_WAIT", 20)
FLEETGATE_AGENT_REPORT_INTERVAL = env_int("FLEETGATE_AGENT_REPORT_INTERVAL", 60)
FLEETGATE_AGENT_MAX_BODY_BYTES = env_int("FLEETGATE_AGENT_MAX_BODY_BYTES", 16 * 1024 * 1024)
# Kubernetes connector timeouts and its discovery cache (one file per cluster).
FLEETGATE_KUBE_CONNECT_TIMEOUT = env_int("FLEETGATE_KUBE_CONNECT_TIMEOUT", 5)
FLEETGATE_KUBE_READ_TIMEOUT = env_int("FLEETGATE_KUBE_READ_TIMEOUT", 30)
FLEETGATE_KUBE_DISCOVERY_CACHE_DIR = env_str("FLEETGATE_KUBE_DISCOVERY_CACHE_DIR", "")  # "": per connector
# Kubernetes' own API groups discovered once per server version and process (clusters/connector/discovery.py);
# off: every cluster discovered on its own (clusters of one version not equally trusted)
FLEETGATE_KUBE_SHARED_DISCOVERY = env_bool("FLEETGATE_KUBE_SHARED_DISCOVERY", True)
FLEETGATE_KUBE_RETRIES = env_int("FLEETGATE_KUBE_RETRIES", 3)  # attempts per request of a rollout's sync
# Rollout legs: how long a worker owns a leg without a heartbeat (seconds), attempts per leg, and the first
# pause between attempts on transient failures (seconds, doubling up to 60).
FLEETGATE_SYNC_LEASE_SECONDS = max(1.0, float(env_str("FLEETGATE_SYNC_LEASE_SECONDS", "") or 60))
FLEETGATE_SYNC_MAX_ATTEMPTS = max(1, env_int("FLEETGATE_SYNC_MAX_ATTEMPTS", 4))
FLEETGATE_SYNC_RETRY_BASE = float(env_str("FLEETGATE_SYNC_RETRY_BASE", "") or 2.0)
# Legs per sync task (a slice: one claim, one finish, one advance; the clusters' work in parallel threads),
# and how long a slice task goes on with the next slice of its rollout itself before it hands the rest to
# the broker (issue 19; docs/rollouts.md).
FLEETGATE_SYNC_SLICE = max(1, env_int("FLEETGATE_SYNC_SLICE", 4))
FLEETGATE_SYNC_CHAIN_SECONDS = max(0.0, float(env_str("FLEETGATE_SYNC_CHAIN_SECONDS", "") or 60))
# Legs per gate task of a rollout's prepare: a rollout with more legs reads, reviews and decides them in a
# task per slice, spread over the worker processes (issue 19; docs/rollouts.md "Prepare in slices").
FLEETGATE_PREPARE_SLICE = max(1, env_int("FLEETGATE_PREPARE_SLICE", 250))
# Impact preview jobs (docs/policies.md#impact-preview): the soft time limit of one job (seconds, 0: none),
# how old a pending/running preview's heartbeat may get before the reaper fails it (seconds), and how many
# starts a job gets (a redelivered job starts over) before it fails.
FLEETGATE_PREVIEW_TIME_LIMIT = max(0, env_int("FLEETGATE_PREVIEW_TIME_LIMIT", 3600))
FLEETGATE_PREVIEW_STALE_SECONDS = max(0, env_int("FLEETGATE_PREVIEW_STALE_SECONDS", 600))
FLEETGATE_PREVIEW_MAX_ATTEMPTS = max(1, env_int("FLEETGATE_PREVIEW_MAX_ATTEMPTS", 3))

# Metrics (docs/operations.md#metrics). /metrics answers to this bearer token or a staff session (empty: staff
# sessions only); FLEETGATE_METRICS_ON_WEB=false turns it off on the web port (`manage.py metrics_server`
# serves it on a port of its own). Every process keeps its counters in PROMETHEUS_MULTIPROC_DIR (default
# $FLEETGATE_VAR_DIR/metrics), shared by web and workers; set here, before prometheus_client is imported.
FLEETGATE_METRICS_TOKEN = env_str("FLEETGATE_METRICS_TOKEN", "")
FLEETGATE_METRICS_ON_WEB = env_bool("FLEETGATE_METRICS_ON_WEB", True)
PROMETHEUS_MULTIPROC_DIR = str(multiproc.configure())

# Notifications (docs/operations.md#notifications): the address links in notifications start with, the
# timeout per attempt (seconds), attempts per delivery, the first pause between attempts (doubling, up to the
# maximum), and how long before a waiver expires its subscribers hear of it (hours).
FLEETGATE_NOTIFY_BASE_URL = env_str("FLEETGATE_NOTIFY_BASE_URL", "http://127.0.0.1:8000")
FLEETGATE_NOTIFY_TIMEOUT = max(1, env_int("FLEETGATE_NOTIFY_TIMEOUT", 10))
FLEETGATE_NOTIFY_MAX_ATTEMPTS = max(1, env_int("FLEETGATE_NOTIFY_MAX_ATTEMPTS", 6))
FLEETGATE_NOTIFY_RETRY_BASE = float(env_str("FLEETGATE_NOTIFY_RETRY_BASE", "") or 10.0)
FLEETGATE_NOTIFY_RETRY_MAX = float(env_str("FLEETGATE_NOTIFY_RETRY_MAX", "") or 3600.0)
FLEETGATE_NOTIFY_WAIVER_NOTICE_HOURS = env_int("FLEETGATE_NOTIFY_WAIVER_NOTICE_HOURS", 72)
# Email notifications go through Django's mail backend: SMTP at EMAIL_HOST:EMAIL_PORT.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "fleetgate@localhost")

# The cache shared by every process (web, worker, beat): login limits, API throttling. Redis when
# FLEETGATE_CACHE_URL names one (redis://, rediss://, unix://), else files under var/cache.
FLEETGATE_CACHE_URL = env_str("FLEETGATE_CACHE_URL", "")
if FLEETGATE_CACHE_URL.startswith(("redis://", "rediss://", "unix://")):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": FLEETGATE_CACHE_URL,
            "KEY_PREFIX": "fleetgate",
        }
    }
elif FLEETGATE_CACHE_URL:
    raise ValueError(
        f"FLEETGATE_CACHE_URL must be a redis://, rediss:// or unix:// URL, not {FLEETGATE_CACHE_URL!r}"
    )
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
            "KEY_PREFIX": "fleetgate",
        }
    }

# The sandbox clusters' /_sandbox admin API token (`make run` generates one per start, in var/ with mode
# 0600); empty: `manage.py sandbox up` generates its own.
FLEETGATE_SANDBOX_ADMIN_TOKEN = env_str("FLEETGATE_SANDBOX_ADMIN_TOKEN", "")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_context": {"()": "fleet.core.logging.RequestContextFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["request_context"]},
    },
    "root": {"handlers": ["console"], "level": env_str("FLEETGATE_LOG_LEVEL", "INFO")},
    # axes: failed logins and lockouts are warnings; its per-login info lines are noise.
    "loggers": {"django.db.backends": {"level": "WARNING"}, "axes": {"level": "WARNING"}},
}
