"""Configuration from the environment."""
from __future__ import annotations

import importlib

import pytest


def _reload_config(monkeypatch, **env):
    for key in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "JWT_SECRET_KEY", "CORS_ORIGINS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    import config

    return importlib.reload(config)


def test_defaults_are_embedded(monkeypatch):
    config = _reload_config(monkeypatch)
    assert config.Config.SQLALCHEMY_DATABASE_URI.startswith("sqlite:///")
    assert "instance" in config.Config.SQLALCHEMY_DATABASE_URI
    assert config.Config.REDIS_URL is None
    assert config.Config.celery()["broker_url"] == "memory://"


def test_database_and_redis_urls(monkeypatch):
    config = _reload_config(monkeypatch, DATABASE_URL="postgres://u@h/db",
                            REDIS_URL="redis://127.0.0.1:6379/3")
    assert config.Config.SQLALCHEMY_DATABASE_URI == "postgresql+psycopg://u@h/db"
    assert config.Config.celery()["broker_url"] == "redis://127.0.0.1:6379/3"


def test_production_refuses_default_secrets(monkeypatch):
    config = _reload_config(monkeypatch, CORS_ORIGINS="https://app.example.com")
    with pytest.raises(RuntimeError):
        config.ProductionConfig.validate()
    config = _reload_config(monkeypatch, SECRET_KEY="x" * 40, JWT_SECRET_KEY="y" * 40,
                            CORS_ORIGINS="https://app.example.com")
    config.ProductionConfig.validate()
    assert config.ProductionConfig.SOCKETIO_ASYNC_MODE == "eventlet"
    config = _reload_config(monkeypatch, SECRET_KEY="x" * 40, JWT_SECRET_KEY="y" * 40,
                            CORS_ORIGINS="*")
    with pytest.raises(RuntimeError):
        config.ProductionConfig.validate()
    _reload_config(monkeypatch)
