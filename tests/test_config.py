"""Configuration from the environment."""
from __future__ import annotations

import os

import pytest

import config as shared_config

CLEARED = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "JWT_SECRET_KEY", "CORS_ORIGINS")


def _build_config(**env):
    """The config classes under this run's environment without ``CLEARED``, plus ``env``."""
    environ = {k: v for k, v in os.environ.items() if k not in CLEARED} | env
    return shared_config.build_configs(environ)


def test_defaults_are_embedded():
    config = _build_config()
    assert config.Config.SQLALCHEMY_DATABASE_URI.startswith("sqlite:///")
    assert "instance" in config.Config.SQLALCHEMY_DATABASE_URI
    assert config.Config.REDIS_URL is None
    assert config.Config.celery()["broker_url"] == "memory://"


def test_database_and_redis_urls():
    config = _build_config(DATABASE_URL="postgres://u@h/db",
                            REDIS_URL="redis://127.0.0.1:6379/3")
    assert config.Config.SQLALCHEMY_DATABASE_URI == "postgresql+psycopg://u@h/db"
    assert config.Config.celery()["broker_url"] == "redis://127.0.0.1:6379/3"


def test_production_refuses_default_secrets():
    config = _build_config(CORS_ORIGINS="https://app.example.com")
    with pytest.raises(RuntimeError):
        config.ProductionConfig.validate()
    config = _build_config(SECRET_KEY="x" * 40, JWT_SECRET_KEY="y" * 40,
                            CORS_ORIGINS="https://app.example.com")
    config.ProductionConfig.validate()
    assert config.ProductionConfig.SOCKETIO_ASYNC_MODE == "eventlet"
    for origins in ("*", "https://app.example.com, *", "https://*.example.com"):
        config = _build_config(SECRET_KEY="x" * 40, JWT_SECRET_KEY="y" * 40,
                                CORS_ORIGINS=origins)
        with pytest.raises(RuntimeError):
            config.ProductionConfig.validate()


@pytest.mark.parametrize("secret, jwt_secret", [
    ("x", "y" * 40), ("x" * 40, "y"), ("x" * 31, "y" * 40), ("x" * 40, "é" * 15)])
def test_production_refuses_secrets_shorter_than_32_bytes(secret, jwt_secret):
    config = _build_config(SECRET_KEY=secret, JWT_SECRET_KEY=jwt_secret,
                            CORS_ORIGINS="https://app.example.com")
    with pytest.raises(RuntimeError, match="32 bytes"):
        config.ProductionConfig.validate()


def test_production_with_cors_origins_unset_is_same_origin_only():
    """Unset is allowed in production and means same origin (tests/test_security.py)."""
    config = _build_config(SECRET_KEY="x" * 32, JWT_SECRET_KEY="y" * 32)
    config.ProductionConfig.validate()
    assert config.ProductionConfig.CORS_ORIGINS == ""
    assert config.ProductionConfig.TRUSTED_PROXIES == 0


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


def test_built_configs_leave_the_shared_classes_alone():
    built = _build_config(DATABASE_URL="postgres://u@h/db", CORS_ORIGINS="https://a.example")
    assert built.Config.SQLALCHEMY_DATABASE_URI == "postgresql+psycopg://u@h/db"
    assert built.ProductionConfig.CORS_ORIGINS == "https://a.example"
    assert shared_config.DevelopmentConfig is shared_config.CONFIGS["development"]
    assert shared_config.Config.SQLALCHEMY_DATABASE_URI != "postgresql+psycopg://u@h/db"
    assert built.Config is not shared_config.Config
