"""Settings read once, at import, from the environment (as twelve-factor Django apps do)."""
import os

import dj_database_url

SECRET_KEY = "not-a-secret-tests-only"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["shop"]
DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"])}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
