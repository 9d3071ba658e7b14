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
    for origins in ("*", "https://app.example.com, *", "https://*.example.com"):
        config = _reload_config(monkeypatch, SECRET_KEY="x" * 40, JWT_SECRET_KEY="y" * 40,
                                CORS_ORIGINS=origins)
        with pytest.raises(RuntimeError):
            config.ProductionConfig.validate()
    _reload_config(monkeypatch)


@pytest.mark.parametrize("secret, jwt_secret", [
    ("x", "y" * 40), ("x" * 40, "y"), ("x" * 31, "y" * 40), ("x" * 40, "é" * 15)])
def test_production_refuses_secrets_shorter_than_32_bytes(monkeypatch, secret, jwt_secret):
    config = _reload_config(monkeypatch, SECRET_KEY=secret, JWT_SECRET_KEY=jwt_secret,
                            CORS_ORIGINS="https://app.example.com")
    try:
        with pytest.raises(RuntimeError, match="32 bytes"):
            config.ProductionConfig.validate()
    finally:
        _reload_config(monkeypatch)


def test_production_with_cors_origins_unset_is_same_origin_only(monkeypatch):
    """Unset is allowed in production and means same origin (tests/test_security.py)."""
    config = _reload_config(monkeypatch, SECRET_KEY="x" * 32, JWT_SECRET_KEY="y" * 32)
    try:
        config.ProductionConfig.validate()
        assert config.ProductionConfig.CORS_ORIGINS == ""
        assert config.ProductionConfig.TRUSTED_PROXIES == 0
    finally:
        _reload_config(monkeypatch)


def test_gc_thresholds_come_from_the_environment_or_the_default(monkeypatch, caplog):
    from app import server

    monkeypatch.delenv("GC_THRESHOLDS", raising=False)
    assert server.gc_thresholds() == server.GC_THRESHOLDS
    monkeypatch.setenv("GC_THRESHOLDS", "20000,5,50")
    assert server.gc_thresholds() == (20000, 5, 50)
    for bad in ("1,2", "a,b,c", "0,10,10"):
        monkeypatch.setenv("GC_THRESHOLDS", bad)
        assert server.gc_thresholds() == server.GC_THRESHOLDS
    assert "GC_THRESHOLDS" in caplog.text


def test_a_long_collector_pause_is_logged(caplog):
    import time

    from app import server

    server._watch_gc("start", {"generation": 2})
    time.sleep(0.03)
    server._watch_gc("stop", {"generation": 2, "collected": 7})
    server._watch_gc("start", {"generation": 0})
    server._watch_gc("stop", {"generation": 0, "collected": 0})
    pauses = [r.getMessage() for r in caplog.records if "gc pause" in r.getMessage()]
    assert len(pauses) == 1 and "generation 2" in pauses[0]
