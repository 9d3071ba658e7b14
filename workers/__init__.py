"""Celery tasks. Task modules use ``shared_task`` and never import the app at import time."""
