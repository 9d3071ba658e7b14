"""Screenshots of the console's main pages into docs/screenshots/ (README shows them).

    .venv/bin/python docs/screenshots/make.py

Starts the product as a newcomer would (embedded default in a temporary instance: SQLite,
in-process worker), takes the first-run page, fills it with ``flask --app wsgi demo``, then
drives headless Chromium (Debian's chromium + chromium-driver) through the pages at
1280 px and at phone width. Nothing is mocked: the pictures show the real product.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from tests.browser import new_driver, wait_until  # noqa: E402

PASSWORD = "demo-password"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    instance = Path(tempfile.mkdtemp(prefix="ec-shots-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "APP_ENV")}
    env.update(INSTANCE_DIR=str(instance), PORT=str(port), PYTHONPATH=str(ROOT))
    flask = [sys.executable, "-m", "flask", "--app", "wsgi"]
    subprocess.run([*flask, "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)
    server = subprocess.Popen([sys.executable, "wsgi.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    drivers = []
    try:
        wait_until(lambda: requests.get(f"{base}/api/v1/health", timeout=1).ok, "the server", timeout=60)
        ada = new_driver(instance / "dl-a")
        drivers.append(ada)
        ada.get(f"{base}/#/register")
        wait_until(lambda: ada.find_elements("id", "first-run"), "the first-run notice")
        shot(ada, "register-first-run")

        subprocess.run([*flask, "demo", "--password", PASSWORD], cwd=ROOT, env=env, check=True,
                       capture_output=True)
        sign_in(ada, base, "ada@demo.example")
        eddie = new_driver(instance / "dl-e")
        drivers.append(eddie)
        sign_in(eddie, base, "eddie@demo.example")

        ada.get(f"{base}/#/episodes")
        wait_until(lambda: len(ada.find_elements("css selector", "#episode-list li")) >= 6, "episodes")
        shot(ada, "episodes")

        pilot = ada.find_element("link text", "Pilot").get_attribute("href").split("#")[1]
        eddie.get(f"{base}/#{pilot}")
        ada.get(f"{base}/#{pilot}")
        wait_until(lambda: "Eddie Editor" in ada.find_element("id", "viewers").text, "Eddie viewing")
        wait_until(lambda: "completed" in ada.find_element("id", "jobs").text, "the jobs")
        shot(ada, "episode", full=True)

        pages = (("notifications", "#inbox li"), ("preferences", "#preferences-form[data-loaded]"),
                 ("activity", "#activity li"), ("people", "#people li"), ("admin", "#dashboard figure"))
        for page, ready in pages:
            ada.get(f"{base}/#/{page}")
            wait_until(lambda ready=ready: ada.find_elements("css selector", ready), page)
            time.sleep(0.5)
            shot(ada, page, full=page in ("admin", "preferences"))
        ada.get(f"{base}/#{pilot.replace('/episodes/', '/timeline/episode/')}")
        wait_until(lambda: ada.find_elements("css selector", "#timeline .changes"), "the timeline")
        shot(ada, "timeline")
        ada.get(f"{base}/api/docs")
        wait_until(lambda: ada.find_elements("css selector", ".opblock"), "Swagger UI", timeout=30)
        shot(ada, "api-docs")

        ada.set_window_size(390, 844)
        ada.get(f"{base}/#{pilot}")
        wait_until(lambda: "Eddie Editor" in ada.find_element("id", "viewers").text, "Eddie viewing (phone)")
        shot(ada, "episode-phone")
    finally:
        for driver in drivers:
            driver.quit()
        server.terminate()
        server.wait(15)


def sign_in(driver, base: str, email: str) -> None:
    driver.get(f"{base}/#/login")
    wait_until(lambda: driver.find_elements("id", "login-form"), "the sign-in form")
    driver.find_element("name", "email").send_keys(email)
    driver.find_element("name", "password").send_keys(PASSWORD)
    driver.find_element("css selector", "#login-form button[type=submit]").click()
    wait_until(lambda: driver.find_elements("id", "me"), "signed in")


def shot(driver, name: str, *, full: bool = False) -> None:
    time.sleep(0.4)  # let the toasts and live updates settle
    driver.execute_script("document.getElementById('toasts')?.replaceChildren()")
    size = driver.get_window_size()
    if full:
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(size["width"], min(max(height + 120, size["height"]), 2400))
    driver.save_screenshot(str(OUT / f"{name}.png"))
    if full:
        driver.set_window_size(size["width"], size["height"])
    print(f"docs/screenshots/{name}.png")


if __name__ == "__main__":
    main()
