"""Celery tasks. Task modules use ``shared_task`` and never import the app at import time.

``register_tasks`` is the one place the task modules are imported: ``celery_app.py`` (the
real workers), the embedded worker (``wsgi.py``) and the tests call it. ``create_app`` does
not, so the application never imports its workers (workers -> services, never back).
"""
from __future__ import annotations

from celery import Celery

from workers import events, jobs, maintenance, notifications

MODULES = (events, jobs, maintenance, notifications)


def register_tasks(celery_app: Celery) -> Celery:
    """Register every task on ``celery_app`` (shared tasks reach each app once imported)."""
    celery_app.conf.include = [module.__name__ for module in MODULES]
    celery_app.loader.import_default_modules()
    return celery_app
