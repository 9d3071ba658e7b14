"""Celery entry point: ``celery -A celery_app worker`` / ``celery -A celery_app beat``."""
from app import create_app
from workers import register_tasks

flask_app = create_app(SOCKETIO_WRITE_ONLY=True)
celery_app = register_tasks(flask_app.extensions["celery"])
