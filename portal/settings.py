"""Settings for the portal. Everything comes from environment variables with safe defaults.

Embedded mode (default): SQLite in WAL mode and files under PORTAL_DATA_DIR, no broker.
Scale mode: DATABASE_URL (PostgreSQL) and REDIS_URL set; Celery workers do the jobs.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


DATA_DIR = Path(os.environ.get("PORTAL_DATA_DIR", BASE_DIR / "var")).resolve()


def _private_data_dir() -> None:
    """The data dir is this account's only (0700), also one made before it was so."""
    DATA_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        if DATA_DIR.stat().st_mode & 0o077:
            DATA_DIR.chmod(0o700)
    except PermissionError:  # someone else's folder: check_storage reports it
        pass


# Patient data on disk (database, WAL, received files, temporary files) is for this service's
# account only: every process that loads the settings creates files 0600 and folders 0700.
os.umask(0o077)
_private_data_dir()


def _secret_key() -> str:
    """Use DJANGO_SECRET_KEY, else a random key kept in the data dir (never in the repo)."""
    if os.environ.get("DJANGO_SECRET_KEY"):
        return os.environ["DJANGO_SECRET_KEY"]
    key_file = DATA_DIR / "secret_key"
    try:
        return key_file.read_text().strip()
    except FileNotFoundError:
        key = secrets.token_urlsafe(50)
        key_file.write_text(key)
        key_file.chmod(0o600)
        return key


SECRET_KEY = _secret_key()
DEBUG = env_bool("DJANGO_DEBUG", False)


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

# --- HTTPS ------------------------------------------------------------------------------------
# PORTAL_HTTPS=proxy: a reverse proxy (nginx, Apache, a load balancer) ends TLS in front of
# `serve` and sets X-Forwarded-Proto/Host/Port. Then cookies are sent over HTTPS only, the
# answers carry HSTS, and plain HTTP is redirected. Off: plain HTTP (loopback, tests).
HTTPS_MODE = os.environ.get("PORTAL_HTTPS", "off").strip().lower() or "off"
if HTTPS_MODE not in {"off", "proxy"}:
    raise ImproperlyConfigured("PORTAL_HTTPS must be off or proxy")
# The proxy's address: only its X-Forwarded-* headers are believed (`serve` passes it to
# waitress, which otherwise drops them). Waitress puts the forwarded host and port into the
# Host header and the scheme into the WSGI environment, so Django does not read
# X-Forwarded-Host itself: its get_host() would take that header and drop X-Forwarded-Port.
TRUSTED_PROXY = os.environ.get("PORTAL_TRUSTED_PROXY", "127.0.0.1")
if HTTPS_MODE == "proxy":
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("PORTAL_HSTS_SECONDS", 31536000)
    SECURE_SSL_REDIRECT = env_bool("PORTAL_HTTPS_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^health/"]  # probes call the node itself, over plain HTTP
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = env_int("PORTAL_SESSION_SECONDS", 12 * 3600)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# Content-Security-Policy (django-csp): scripts, styles and images from the portal only, no
# inline script, no framing, no connection to another origin.
CONTENT_SECURITY_POLICY = {"DIRECTIVES": {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:", "blob:"],
    "connect-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}}

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "corsheaders",
    "drf_spectacular",
    "axes",
    "core",
    "portal",
    "pacs",
    "worklist",
    "hl7gw",
]

MIDDLEWARE = [
    "portal.operations.RequestTimingMiddleware",  # first: it times everything below
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "core.access.AccessAuditMiddleware",  # who read which patient data (audit trail)
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # last: it answers a locked-out login (django-axes)
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # refuses a locked-out login before checking it
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"
ASGI_APPLICATION = "portal.asgi.application"

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
                "portal.context_processors.portal",
            ],
        },
    },
]

# PORTAL_STORAGE_FSYNC: "on" (default): a received file's bytes are on disk before the store
# is answered, not its index commit (SQLite synchronous=NORMAL; on PostgreSQL the store's
# transaction commits with synchronous_commit off, pacs.services.ingest); "full": also its
# name in the series folder and each store's commit, so that a power failure loses no
# answered store; "off": no syncs.
_sync = os.environ.get("PORTAL_STORAGE_FSYNC", "").strip().lower() or "on"
STORAGE_SYNC = {"1": "on", "true": "on", "yes": "on", "0": "off", "false": "off",
                "no": "off"}.get(_sync, _sync)
if STORAGE_SYNC not in {"on", "off", "full"}:
    raise ImproperlyConfigured("PORTAL_STORAGE_FSYNC must be on, off or full")

# --- Database -------------------------------------------------------------------------------
_SQLITE_OPTIONS = {
    # WAL lets readers (web pages) run while a DIMSE process writes; IMMEDIATE takes the write
    # lock at BEGIN so concurrent writers queue on the busy timeout instead of deadlocking.
    # synchronous=NORMAL: a commit survives a crash of the process, not always a power failure.
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous="
                    + ("FULL;" if STORAGE_SYNC == "full" else "NORMAL;"),
    "transaction_mode": "IMMEDIATE",
    "timeout": 30,
}
DATABASE_URL = os.environ.get("DATABASE_URL", "")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "portal.sqlite3",
            # A file, not shared-cache memory: listener threads and WAL behave as in production.
            "TEST": {"NAME": str(DATA_DIR / "test-portal.sqlite3")},
        }
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {}).update(_SQLITE_OPTIONS)
# Keep connections: the DIMSE handlers call close_old_connections() per request, and with the
# default of 0 every C-STORE would reopen the database (~5 ms measured with SQLite).
DATABASES["default"]["CONN_MAX_AGE"] = env_int("PORTAL_DB_CONN_MAX_AGE", 600)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

# --- Login throttling (django-axes) ----------------------------------------------------------
# After PORTAL_LOGIN_FAILURE_LIMIT wrong passwords for one user name from one address, that
# pair is locked out for PORTAL_LOGIN_LOCKOUT_MINUTES (429), right password or not. Failures,
# lockouts and logins go into the audit trail (core.login_audit).
AXES_FAILURE_LIMIT = env_int("PORTAL_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = env_int("PORTAL_LOGIN_LOCKOUT_MINUTES", 15) / 60  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked.html"
AXES_VERBOSE = False  # its log lines name the user and address at INFO: the audit trail does

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("PORTAL_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns when it is missing
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True  # serve from app/static dirs without a collectstatic step

# --- Celery ----------------------------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
SCALE_MODE = bool(REDIS_URL)
CELERY_BROKER_URL = REDIS_URL or "memory://localhost/"
CELERY_RESULT_BACKEND = REDIS_URL or "cache+memory://"
# Embedded mode has no broker: jobs run in-process.
CELERY_TASK_ALWAYS_EAGER = not SCALE_MODE
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# How often Celery beat looks for deliveries that have no scheduled task (core.tasks); every
# worker also looks once when it starts. Run beat once per site: `celery -A portal beat`, or
# one worker with -B.
DELIVERY_SWEEP_SECONDS = env_int("PORTAL_DELIVERY_SWEEP_SECONDS", 300)
CELERY_BEAT_SCHEDULE = {
    "sweep-deliveries": {"task": "core.sweep_deliveries",
                         "schedule": float(max(DELIVERY_SWEEP_SECONDS, 1))},
} if DELIVERY_SWEEP_SECONDS > 0 else {}
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")

# --- Portal: listeners and storage -----------------------------------------------------------
HTTP_HOST = os.environ.get("PORTAL_HTTP_HOST", "127.0.0.1")
HTTP_PORT = env_int("PORTAL_HTTP_PORT", 8000)
# What one web client can make `serve` spend (portal.webserver): open connections in all and
# per source address; seconds for a request's header from its first byte, then a minimum
# rate for its body; seconds an idle keep-alive connection stays open.
HTTP_LIMITS = {
    "max_connections": env_int("PORTAL_HTTP_MAX_CONNECTIONS", 1000),
    "max_per_source": env_int("PORTAL_HTTP_MAX_PER_SOURCE", 64),
    "header_seconds": float(os.environ.get("PORTAL_HTTP_HEADER_SECONDS", "") or 10),
    "min_bytes_per_second": env_int("PORTAL_HTTP_MIN_BYTES_PER_SECOND", 10_000),
    "idle_seconds": env_int("PORTAL_HTTP_IDLE_SECONDS", 60),
}
DIMSE_AET = os.environ.get("PORTAL_DIMSE_AET", "PORTAL")
DIMSE_HOST = os.environ.get("PORTAL_DIMSE_HOST", "0.0.0.0")
DIMSE_PORT = env_int("PORTAL_DIMSE_PORT", 11112)
# Several SCP processes share the port (SO_REUSEPORT): one Python process is one core.
DIMSE_PROCESSES = env_int("PORTAL_DIMSE_PROCESSES", 1)
# Unknown calling AE titles are refused unless this is set (PS3.8 A-ASSOCIATE-RJ 1/1/3).
DIMSE_ALLOW_UNKNOWN_AE = env_bool("PORTAL_DIMSE_ALLOW_UNKNOWN_AE", False)
# A known AE title is accepted from its own addresses only (its host, or its calling
# addresses), unless the AE says "any address" or this opens it for every AE.
DIMSE_ANY_HOST = env_bool("PORTAL_DIMSE_ANY_HOST", False)
# How many of each AE title's worklist queries are kept, as they came, for the worklist
# explainer ("why doesn't my modality see this order?"); 0 keeps none.
MWL_QUERIES_KEPT = env_int("PORTAL_MWL_QUERIES_KEPT", 20)
# Refuse associations whose called AE title is not PORTAL_DIMSE_AET (A-ASSOCIATE-RJ 1/1/7).
DIMSE_CHECK_CALLED_AET = env_bool("PORTAL_DIMSE_CHECK_CALLED_AET", False)
# How long a process keeps the AE table before reading it again (seconds).
# How long a process keeps the AE table and the forwarding rules before reading them again: a
# change made in another process applies within this long. (The older name of the variable,
# PORTAL_DIMSE_AE_CACHE_SECONDS, is still read.)
CONFIG_CACHE_SECONDS = float(os.environ.get("PORTAL_CONFIG_CACHE_SECONDS", "")
                             or os.environ.get("PORTAL_DIMSE_AE_CACHE_SECONDS", "") or 2)
# Private storage SOP classes accepted besides every standard one (comma-separated UIDs).
DIMSE_PRIVATE_STORAGE_CLASSES = [
    uid.strip() for uid in os.environ.get("PORTAL_DIMSE_PRIVATE_STORAGE_CLASSES", "").split(",")
    if uid.strip()]
# On stop (SIGTERM), associations already running may finish for this long (0: abort them).
SHUTDOWN_GRACE_SECONDS = float(os.environ.get("PORTAL_SHUTDOWN_GRACE_SECONDS", "") or 30)
DIMSE_MAX_PDU = env_int("PORTAL_DIMSE_MAX_PDU", 0)  # 0 = unlimited
# What one caller can make a DICOM listener process spend (dicomnet.engine.DimseServer):
# admitted associations in all, per calling AE title and per source address; connections
# still waiting for their A-ASSOCIATE-RQ in all and per source, each for ARTIM seconds at
# most (PS3.8 9.1.5); then a PDU must start within the idle time and arrive at the minimum
# rate; a C-STORE data set may be this large (past the spool size it goes to a temporary file).
DIMSE_MAX_ASSOCIATIONS = env_int("PORTAL_DIMSE_MAX_ASSOCIATIONS", 64)
DIMSE_MAX_PER_AE = env_int("PORTAL_DIMSE_MAX_PER_AE", 16)
DIMSE_MAX_PER_SOURCE = env_int("PORTAL_DIMSE_MAX_PER_SOURCE", 32)
DIMSE_MAX_PENDING = env_int("PORTAL_DIMSE_MAX_PENDING", 32)
DIMSE_MAX_PENDING_PER_SOURCE = env_int("PORTAL_DIMSE_MAX_PENDING_PER_SOURCE", 4)
DIMSE_ARTIM_SECONDS = float(os.environ.get("PORTAL_DIMSE_ARTIM_SECONDS", "") or 10)
DIMSE_IDLE_SECONDS = float(os.environ.get("PORTAL_DIMSE_IDLE_SECONDS", "") or 60)
DIMSE_MIN_BYTES_PER_SECOND = env_int("PORTAL_DIMSE_MIN_BYTES_PER_SECOND", 64 * 1024)
DIMSE_MAX_DATASET_BYTES = env_int("PORTAL_DIMSE_MAX_DATASET_BYTES", 4 << 30)
DIMSE_SPOOL_BYTES = env_int("PORTAL_DIMSE_SPOOL_BYTES", 32 << 20)

# --- TLS (PS3.15 B.9; core.tls) --------------------------------------------------------------
# Our certificate and key (PEM), for the TLS listeners and as client certificate; the
# authorities we trust for peers' certificates; whether a caller must present one.
TLS_CERT = os.environ.get("PORTAL_TLS_CERT", "")
TLS_KEY = os.environ.get("PORTAL_TLS_KEY", "")
TLS_CA = os.environ.get("PORTAL_TLS_CA", "")
TLS_VERIFY_CLIENT = env_bool("PORTAL_TLS_VERIFY_CLIENT", False)
# A second DICOM listener that speaks TLS only (-1: none), and the same for HL7 (MLLP over TLS)
DIMSE_TLS_PORT = env_int("PORTAL_DIMSE_TLS_PORT", -1)
HL7_TLS_PORT = env_int("PORTAL_HL7_TLS_PORT", -1)

# Worklist: generated accession numbers are PREFIX + YYMMDD + a 4-digit daily counter
ACCESSION_PREFIX = os.environ.get("PORTAL_ACCESSION_PREFIX", "A")[:6]
HL7_PORT = env_int("PORTAL_HL7_PORT", 2575)
HL7_HOST = os.environ.get("PORTAL_HL7_HOST", "0.0.0.0")
# What one HL7 client can make the listener spend: a frame's size and time, the idle time of a
# connection, connections in all and per source address.
HL7_MAX_FRAME_BYTES = env_int("PORTAL_HL7_MAX_FRAME_BYTES", 1 << 20)
HL7_FRAME_SECONDS = float(os.environ.get("PORTAL_HL7_FRAME_SECONDS", "") or 60)
HL7_IDLE_SECONDS = float(os.environ.get("PORTAL_HL7_IDLE_SECONDS", "") or 300)
HL7_MAX_CONNECTIONS = env_int("PORTAL_HL7_MAX_CONNECTIONS", 64)
HL7_MAX_PER_SOURCE = env_int("PORTAL_HL7_MAX_PER_SOURCE", 8)
# Messages from senders that are not registered (MSH-3/MSH-4 and address) are refused with AR,
# unless this opens the gateway to anyone.
HL7_ALLOW_UNKNOWN_SENDER = env_bool("PORTAL_HL7_ALLOW_UNKNOWN_SENDER", False)
# What a re-sent SOP Instance UID does: "keep" the stored one, or "replace" it. Either way a
# re-sent instance of another patient, study or series is a conflict: "warn" keeps the stored
# one and answers with a warning (0xB000), "refuse" answers with a failure; "replace" replaces
# across patients, studies or series only with PORTAL_DUPLICATE_REPLACE_ACROSS on.
DUPLICATE_POLICY = os.environ.get("PORTAL_DUPLICATE_POLICY", "keep")
DUPLICATE_CONFLICT = os.environ.get("PORTAL_DUPLICATE_CONFLICT", "warn")
DUPLICATE_REPLACE_ACROSS = env_bool("PORTAL_DUPLICATE_REPLACE_ACROSS", False)
if DUPLICATE_POLICY not in {"keep", "replace"} or DUPLICATE_CONFLICT not in {"warn", "refuse"}:
    raise ImproperlyConfigured("PORTAL_DUPLICATE_POLICY is keep or replace, "
                               "PORTAL_DUPLICATE_CONFLICT warn or refuse")
# The issuer of this site's patient IDs: given to identifiers that name none (the scheduler's
# form, images without IssuerOfPatientID, HL7 senders without PID-3.4), so that one patient
# has one record whichever way they arrive.
LOCAL_ISSUER = os.environ.get("PORTAL_LOCAL_ISSUER", "").strip()[:64]
STORAGE_DIR = Path(os.environ.get("PORTAL_STORAGE_DIR", DATA_DIR / "dicom")).resolve()
# Where Part 10 files live: empty (default) or file:// for local files under
# PORTAL_STORAGE_DIR; s3://bucket/prefix for an S3-compatible object store (pacs.objectstore),
# which every node of a scale-out site shares instead of a file system.
STORAGE_URL = os.environ.get("PORTAL_STORAGE_URL", "").strip()
if STORAGE_URL and not STORAGE_URL.startswith(("s3://", "file://")):
    raise ImproperlyConfigured("PORTAL_STORAGE_URL must start with s3:// or file://")
if STORAGE_URL.startswith("file://"):
    STORAGE_DIR = Path(STORAGE_URL.removeprefix("file://")).resolve()
# The object store's address (empty: AWS itself) and region. Credentials: these two settings,
# else boto3's own chain (AWS_ACCESS_KEY_ID..., ~/.aws, an instance role); never in the repo.
S3_ENDPOINT_URL = os.environ.get("PORTAL_S3_ENDPOINT_URL", "").strip()
S3_REGION = os.environ.get("PORTAL_S3_REGION", "").strip() or "us-east-1"
S3_ACCESS_KEY_ID = os.environ.get("PORTAL_S3_ACCESS_KEY_ID", "").strip()
S3_SECRET_ACCESS_KEY = os.environ.get("PORTAL_S3_SECRET_ACCESS_KEY", "").strip()
# Connections to the object store per process (each association or web thread takes one).
S3_MAX_CONNECTIONS = env_int("PORTAL_S3_MAX_CONNECTIONS", 64)
# What is on disk before a store is answered (see STORAGE_SYNC above).
STORAGE_FSYNC = STORAGE_SYNC != "off"
STORAGE_FSYNC_FULL = STORAGE_SYNC == "full"
# A synced received file leaves the page cache once written (pacs.storage.LocalStorage).
STORAGE_DROP_CACHE = env_bool("PORTAL_STORAGE_DROP_CACHE", True)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("PORTAL_LOG_LEVEL", "INFO")},
    "loggers": {
        # pynetdicom logs identifiers (PHI) at INFO/DEBUG: keep it at WARNING.
        "pynetdicom": {"level": "WARNING"},
        "waitress.queue": {"level": "ERROR"},
        # a line per 4xx answer names the path (UIDs) and lets any client fill the log; the
        # access audit keeps who asked for what, and 5xx errors are still logged
        "django.request": {"level": "ERROR"},
        "axes": {"level": "WARNING"},
    },
}

REST_FRAMEWORK = {
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Radiology portal DICOMweb API",
    "DESCRIPTION": "QIDO-RS, WADO-RS, WADO-URI and STOW-RS (DICOM PS3.18) under /dicomweb. "
                   "Authenticate with a session or 'Authorization: Token <key>'.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
}

# --- UPS event channels (WebSocket) ---------------------------------------------------------
# `serve` answers WebSockets on this port (-1: none); Redis carries the wake-ups
# between processes in scale mode, memory inside one process otherwise.
WS_PORT = env_int("PORTAL_WS_PORT", 8001)
CHANNEL_LAYERS = {"default": {
    "BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]},
} if REDIS_URL else {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- DICOMweb --------------------------------------------------------------------------------
# Anonymous QIDO/WADO (never STOW) only when opened on purpose, e.g. for a public teaching file.
DICOMWEB_ANONYMOUS_READ = env_bool("PORTAL_DICOMWEB_ANONYMOUS_READ", False)
# The base URL written into RetrieveURL/BulkDataURI; empty = from the request's Host.
DICOMWEB_BASE_URL = os.environ.get("PORTAL_DICOMWEB_BASE_URL", "")
# A bearer token Prometheus scrapes /metrics with (admins may always); empty: admins only.
METRICS_TOKEN = os.environ.get("PORTAL_METRICS_TOKEN", "")
# Rendered images (previews, /rendered, /thumbnail, WADO-URI JPEG): decoded frames up to this
# many pixels (x samples); larger ones are refused (413). Frames per WADO-RS request.
RENDER_MAX_PIXELS = env_int("PORTAL_RENDER_MAX_PIXELS", 100_000_000)
WADO_MAX_FRAMES = env_int("PORTAL_WADO_MAX_FRAMES", 256)
# At most this many QIDO-RS results per request (more are paged with limit/offset).
QIDO_MAX_RESULTS = env_int("PORTAL_QIDO_MAX_RESULTS", 10000)
# The largest STOW-RS body accepted, in bytes (default 2 GiB). Part 10 parts are read and
# stored one at a time; metadata + bulk data requests are read whole.
UPLOAD_MAX_BYTES = env_int("PORTAL_UPLOAD_MAX_BYTES", 2 << 30)
DATA_UPLOAD_MAX_MEMORY_SIZE = UPLOAD_MAX_BYTES  # Django's own check, where a body is read whole
# A scheduled step's duration when its procedure has none in the catalog (minutes)
STEP_MINUTES = env_int("PORTAL_STEP_MINUTES", 20)

# The OHIF viewer served at /viewer/ (scripts/setup.sh installs it from the npm registry into
# vendor/; scripts/viewer.sh). Other viewers: "Name|URL template;Name|URL template", with
# {study} (Study Instance UID), {patient_id} and {dicomweb} (our DICOMweb root) in the
# template, each URL-encoded; e.g. Weasis:
#   Weasis|weasis://%24dicom%3Ars%20--url%20%22{dicomweb}%22%20-r%20%22studyUID%3D{study}%22
VIEWER_VERSION = "3.13.2"
VIEWER_DIR = os.environ.get("PORTAL_VIEWER_DIR") or str(
    BASE_DIR / "vendor" / f"ohif-{VIEWER_VERSION}" / "package" / "dist")
VIEWER_LINKS = [tuple(item.split("|", 1)) for item in
                os.environ.get("PORTAL_VIEWER_LINKS", "").split(";") if "|" in item]
# Viewers served from another origin (e.g. OHIF on its own host): their origins, comma-separated.
CORS_ALLOWED_ORIGINS = env_list("PORTAL_CORS_ORIGINS")
CORS_URLS_REGEX = r"^/(dicomweb|wado)(/.*)?$"
CORS_ALLOW_CREDENTIALS = env_bool("PORTAL_CORS_CREDENTIALS", False)

# --- Listener ports --------------------------------------------------------------------------
# Each listener needs a port of its own. The DIMSE and HL7 listeners bind with SO_REUSEPORT
# (several processes share one port), so two of them on one port would both bind it and the
# kernel would split the connections between them: refused here instead. 0 = any free port.
_PORTS = {"PORTAL_HTTP_PORT": HTTP_PORT, "PORTAL_WS_PORT": WS_PORT,
          "PORTAL_DIMSE_PORT": DIMSE_PORT, "PORTAL_HL7_PORT": HL7_PORT,
          "PORTAL_DIMSE_TLS_PORT": DIMSE_TLS_PORT, "PORTAL_HL7_TLS_PORT": HL7_TLS_PORT}
for _port in {port for port in _PORTS.values() if port > 0}:
    _same = [name for name, port in _PORTS.items() if port == _port]
    if len(_same) > 1:
        raise ImproperlyConfigured(f"{' and '.join(_same)} are both {_port}: "
                                   "each listener needs a port of its own")
CORS_EXPOSE_HEADERS = ["Warning", "Content-Location", "Content-Type"]
