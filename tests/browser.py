"""Headless Chromium for the console's browser tests (Debian's ``chromium`` and
``chromium-driver`` driven by selenium), and the real server they run against."""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import _Config
from tests.helpers import wait_for

CHROMIUM = os.environ.get("CHROMIUM_BINARY") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")


OPEN_DRIVERS: list = []  # for failure reports


def require_browser() -> None:
    """Skip without Chromium on a developer machine; fail in CI (EC_REQUIRE_BROWSER=1)."""
    missing = [name for name, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)) if not path]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium")
    if missing:
        message = f"browser tests need {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("EC_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)


def new_driver(download_dir: Path, *, width: int = 1280, height: int = 900):
    """A headless Chromium session with its own profile (its own localStorage)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--disable-background-timer-throttling",
                "--disable-renderer-backgrounding", "--disable-backgrounding-occluded-windows"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {
        "download.default_directory": str(download_dir),
        "download.prompt_for_download": False,
    })
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    OPEN_DRIVERS.append(driver)
    driver.execute_cdp_cmd("Page.setDownloadBehavior",
                           {"behavior": "allow", "downloadPath": str(download_dir)})
    return driver


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """``wait_for`` for a page: errors of a page still changing are retried, and a timeout
    reports what every open browser showed and logged."""
    return wait_for(predicate, timeout, 0.1, what, ignore=(Exception,),
                    describe=lambda: "\n".join(page_report(d) for d in OPEN_DRIVERS))


def page_report(driver: Any) -> str:
    """What the page showed and logged: for failure messages."""
    try:
        body = driver.execute_script("return document.body.innerText")[:1500]
        if driver.session_id is None:
            return ""
        logs = "\n".join(e["message"][:300] for e in driver.get_log("browser"))
        return f"url: {driver.current_url}\npage:\n{body}\nconsole:\n{logs}"
    except Exception as exc:  # noqa: BLE001 - the report must not hide the real failure
        return f"(no page report: {exc})"


@contextmanager
def console_server() -> Iterator[Any]:
    """A real ``python wsgi.py`` on the run's database and a real worker.

    PostgreSQL + Redis: eventlet web process and a ``celery -A celery_app worker``.
    SQLite: the embedded default (threading, in-process worker and beat on memory://).
    """
    from tests.processes import celery_worker, web_server

    with ExitStack() as stack:
        if _Config.REDIS_URL:
            stack.enter_context(celery_worker(concurrency=2))
            server = stack.enter_context(web_server(async_mode="eventlet"))
        else:
            server = stack.enter_context(web_server(async_mode="threading", EMBEDDED_WORKER="1"))
        yield server


@contextmanager
def server_on_port(port: int, **extra_env: str) -> Iterator[Any]:
    """``python wsgi.py`` on a given port (so a test can stop it and start it again at the
    same address), in the same mode as ``console_server``; stopped with SIGTERM."""
    from tests.processes import web_server

    if _Config.REDIS_URL:
        with web_server(async_mode="eventlet", port=port, **extra_env) as server:
            yield server
    else:
        with web_server(async_mode="threading", port=port, EMBEDDED_WORKER="1",
                        **extra_env) as server:
            yield server


def click(driver, selector: str, what: str = "") -> None:
    """Click the element at ``selector``, finding it again if a live redraw replaced it
    between the find and the click (a list redrawn on every progress event)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def attempt() -> bool:
        try:
            driver.find_element(By.CSS_SELECTOR, selector).click()
            return True
        except StaleElementReferenceException:
            return False

    wait_until(attempt, what or f"a click on {selector}")
