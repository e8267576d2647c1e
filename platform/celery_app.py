"""The Celery application (named celery_app, not celery, so it never shadows the library)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "apps.platform.settings")

app = Celery("tollgate")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.task(name="platform.system", ignore_result=True)
def platform_system() -> str:
    """Proves the stdlib platform module is intact inside a worker."""
    import logging
    import platform

    value = platform.system()
    logging.getLogger(__name__).warning("platform.system() = %s", value)
    return value
