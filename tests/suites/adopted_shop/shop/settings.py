"""Settings read once, at import time, from the environment (as many apps do)."""
import os

DATABASE = {
    "host": os.environ.get("POSTGRES_HOST", "localhost"),
    "port": int(os.environ.get("POSTGRES_PORT", "5432")),
    "dbname": os.environ.get("POSTGRES_DB", "shop"),
    "user": os.environ.get("POSTGRES_USER", "shop"),
    "password": os.environ.get("POSTGRES_PASSWORD", "shop-secret"),
}
CACHE_URL = os.environ.get("CACHE_URL", "redis://localhost:6379/0")
