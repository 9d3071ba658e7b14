"""The console in headless Chromium against a real server process and a real worker:
live episode edits and viewers across two browsers, the bell across two tabs, an export's
progress bar and zip download, preferences saved and reloaded."""
from __future__ import annotations

import time
import zipfile

import pytest
import requests
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.browser import (
    OPEN_DRIVERS,
    click,
    console_server,
    new_driver,
    require_browser,
    server_on_port,
    wait_until,
)

pytestmark = pytest.mark.browser


@pytest.fixture
def app(_schema):
    """conftest's ``app``, but the cleaning TRUNCATE is retried: the server of this module
    lives across tests, and the previous test's pages still disconnecting (presence rows,
    events) can deadlock with it on PostgreSQL."""
    from sqlalchemy.exc import OperationalError

    from app.extensions import db
    from tests.conftest import _clean, make_test_app

    app = make_test_app()
    for attempt in range(5):
        try:
            _clean(app)
            break
        except OperationalError:
            with app.app_context():
                db.session.rollback()
            if attempt == 4:
                raise
            time.sleep(0.5)
    yield app
    with app.app_context():
        db.session.remove()


@pytest.fixture(scope="module")
def server(_schema):
    """The real web process (and worker) for this module."""
    require_browser()
    with console_server() as s:
        yield s


@pytest.fixture(scope="module")
def browsers(tmp_path_factory):
    """Two browser sessions (separate profiles), reused by the module's tests."""
    require_browser()
    pair = []
    for _ in range(2):
        directory = tmp_path_factory.mktemp("downloads")
        driver = new_driver(directory)
        driver.downloads = directory
        pair.append(driver)
    yield pair
    for driver in pair:
        OPEN_DRIVERS.remove(driver)
        driver.quit()


def sign_in(driver, base: str, user) -> None:
    """Sign in through the page's form, from a clean profile state.

    Leaving the console for another document of the origin first unloads the previous
    test's page (a hash-only change would keep it, and its sockets, alive)."""
    driver.get(f"{base}/api/v1/health")
    driver.execute_script("localStorage.clear()")
    driver.get(f"{base}/#/login")
    wait_until(lambda: driver.find_element(By.ID, "login-form"), "the sign-in form")
    driver.find_element(By.NAME, "email").send_keys(user.email)
    driver.find_element(By.NAME, "password").send_keys(user.password)
    driver.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()
    wait_until(lambda: driver.find_element(By.ID, "me").text.startswith(user.name), "signed in")


def go(driver, base: str, hash_: str) -> None:
    driver.get(f"{base}/{hash_}")


def live(driver) -> bool:
    """The console's /feed socket is connected (the offline banner is not shown)."""
    return driver.execute_script("return document.body.dataset.online") == "true"


def css(driver, selector: str):
    return driver.find_element(By.CSS_SELECTOR, selector)


def text(driver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def api(server, method: str, path: str, user, **kwargs):
    return requests.request(method, f"{server.url}/api/v1{path}", headers=user.headers, timeout=10, **kwargs)


UNLABELLED = """
return [...document.querySelectorAll('input, select, textarea, button, a[href]')]
  .filter((el) => el.offsetParent !== null || el.type === 'checkbox')
  .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                  && !(el.textContent || '').trim() && el.type !== 'hidden')
  .map((el) => el.outerHTML.slice(0, 120));
"""


def assert_labelled(driver) -> None:
    """Every visible control has a name a screen reader can say (label, aria-label or text)."""
    assert driver.execute_script(UNLABELLED) == []


def bell(driver) -> int:
    """The bell's unread count; -1 until the page has fetched it."""
    return int(driver.find_element(By.ID, "bell-count").get_attribute("data-count") or -1)


def test_editor_edit_appears_live_with_editor_among_viewers(server, browsers, editor, viewer):
    viewer_page, editor_page = browsers
    ep = requests.post(f"{server.url}/api/v1/episodes", headers=editor.headers,
                       json={"title": "Pilot", "episode_number": 1}, timeout=10).json()
    sign_in(viewer_page, server.url, viewer)
    go(viewer_page, server.url, f"#/episodes/{ep['id']}")
    wait_until(lambda: viewer_page.find_element(By.ID, "episode-title").text == "Pilot", "the episode")
    wait_until(lambda: viewer.name in text(viewer_page, "viewers"), "the viewer itself listed")
    viewer_page.execute_script("window.__noReload = 'still here'")

    sign_in(editor_page, server.url, editor)
    go(editor_page, server.url, f"#/episodes/{ep['id']}")
    title = wait_until(lambda: css(editor_page, "#episode-form [name=title]"), "the edit form")
    wait_until(lambda: title.get_attribute("value") == "Pilot", "the form filled")
    assert_labelled(editor_page)
    # The editor joined the room: the viewer's page lists the editor without a reload.
    wait_until(lambda: editor.name in text(viewer_page, "viewers"), "the editor among the viewers")

    title.clear()
    title.send_keys("Pilot, final cut")
    css(editor_page, "#episode-form [name=description]").send_keys("Locked on Friday")
    css(editor_page, "#episode-form button[type=submit]").click()

    wait_until(lambda: viewer_page.find_element(By.ID, "episode-title").text == "Pilot, final cut",
               "the new title on the viewer's page")
    assert viewer_page.find_element(By.ID, "episode-description").text == "Locked on Friday"
    assert editor.name in viewer_page.find_element(By.ID, "episode-changed").text
    assert viewer_page.execute_script("return window.__noReload") == "still here"
    # The change is the server's, not just the page's.
    body = requests.get(f"{server.url}/api/v1/episodes/{ep['id']}", headers=viewer.headers, timeout=10).json()
    assert body["title"] == "Pilot, final cut"


def test_bell_count_is_right_in_two_tabs(server, browsers, admin, viewer):
    driver = browsers[0]
    sign_in(driver, server.url, viewer)
    first = driver.current_window_handle
    go(driver, server.url, "#/episodes")
    wait_until(lambda: live(driver), "tab 1 connected")
    driver.switch_to.new_window("tab")
    second = driver.current_window_handle
    go(driver, server.url, "#/notifications")  # same profile: already signed in
    wait_until(lambda: live(driver), "tab 2 connected")
    wait_until(lambda: bell(driver) == 0, "the bell at 0")
    wait_until(lambda: "No notifications" in text(driver, "inbox"), "the empty inbox")

    sent = requests.post(f"{server.url}/api/v1/notifications", headers=admin.headers, timeout=10,
                         json={"user_ids": [viewer.id], "type": "user:mention", "title": "Look at S1E1",
                               "message": "Cut is ready"})
    assert sent.status_code == 202, sent.text
    wait_until(lambda: bell(driver) == 1, "the bell at 1 in tab 2")
    wait_until(lambda: "Look at S1E1" in driver.find_element(By.ID, "inbox").text, "the inbox item live")
    driver.switch_to.window(first)
    wait_until(lambda: bell(driver) == 1, "the bell at 1 in tab 1")

    driver.switch_to.window(second)
    driver.find_element(By.CSS_SELECTOR, "#inbox [data-action=read]").click()
    wait_until(lambda: bell(driver) == 0, "the bell at 0 in tab 2")
    driver.switch_to.window(first)
    wait_until(lambda: bell(driver) == 0, "the bell at 0 in tab 1")
    assert api(server, "GET", "/notifications/unread-count", viewer).json()["count"] == 0
    driver.switch_to.window(second)
    driver.close()
    driver.switch_to.window(first)


def test_upload_then_export_progress_reaches_100_and_zip_downloads(server, browsers, editor, tmp_path):
    driver = browsers[1]
    ep = requests.post(f"{server.url}/api/v1/episodes", headers=editor.headers,
                       json={"title": "Export me", "episode_number": 2}, timeout=10).json()
    sign_in(driver, server.url, editor)
    go(driver, server.url, f"#/episodes/{ep['id']}")
    wait_until(lambda: live(driver) and driver.find_element(By.ID, "create-export"), "the episode page")

    source = tmp_path / "script.txt"
    source.write_bytes(b"INT. STUDIO - NIGHT\n" * 2000)
    driver.find_element(By.ID, "upload-input").send_keys(str(source))
    driver.find_element(By.CSS_SELECTOR, "#upload-form button[type=submit]").click()
    wait_until(lambda: driver.find_element(By.ID, "upload-progress").get_attribute("value") == "100",
               "the upload progress bar at 100")
    wait_until(lambda: "script.txt" in driver.find_element(By.ID, "files").text, "the uploaded file listed")

    driver.find_element(By.ID, "create-export").click()
    row = "#jobs li[data-status=completed]"
    wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, row), "the export job completed", timeout=60)
    # Read the row in one script: the list redraws on live events, so an element found by
    # one call may be replaced before the next (a stale reference, not a wrong value).
    bar = driver.execute_script(
        "const r = document.querySelector(arguments[0]);"
        "return r && [String(r.querySelector('progress').value), r.querySelector('.job-pct').textContent];",
        row)
    assert bar == ["100", "100%"]

    for old in driver.downloads.glob("*"):
        old.unlink()

    def click_download() -> bool:
        try:
            driver.find_element(By.CSS_SELECTOR, f"{row} [data-action=download]").click()
            return True
        except StaleElementReferenceException:  # redrawn between find and click: find again
            return False

    wait_until(click_download, "the download button clicked")
    zips = wait_until(lambda: [p for p in driver.downloads.glob("*.zip")], "the zip downloaded", timeout=30)
    with zipfile.ZipFile(zips[0]) as archive:
        names = archive.namelist()
    assert any(name.endswith("script.txt") for name in names), names


def test_preferences_save_and_reload(server, browsers, viewer):
    driver = browsers[0]
    sign_in(driver, server.url, viewer)
    go(driver, server.url, "#/preferences")
    wait_until(lambda: css(driver, "#preferences-form[data-loaded=true]"), "preferences")

    assert_labelled(driver)
    driver.find_element(By.CSS_SELECTOR, "input[name=muted][value='episode:updated']").click()
    driver.find_element(By.CSS_SELECTOR, "input[name='channel:job:failed'][value=email]").click()
    driver.find_element(By.CSS_SELECTOR, "input[name='channel:file:ready'][value=email]").click()
    driver.find_element(By.ID, "quiet-on").click()
    driver.execute_script("document.getElementById('quiet-start').value = '21:30';"
                          "document.getElementById('quiet-end').value = '06:45';")
    Select(driver.find_element(By.ID, "timezone")).select_by_value("Europe/Paris")
    Select(driver.find_element(By.ID, "digest")).select_by_value("daily")
    driver.find_element(By.CSS_SELECTOR, "#preferences-form button[type=submit]").click()
    wait_until(lambda: driver.find_element(By.ID, "preferences-status").text == "Saved.", "saved")

    driver.refresh()
    wait_until(lambda: css(driver, "#preferences-form[data-loaded=true]"), "reloaded")

    def checked(selector: str) -> bool:
        return css(driver, selector).is_selected()

    def chosen(element_id: str) -> str:
        return Select(driver.find_element(By.ID, element_id)).first_selected_option.get_attribute("value")

    assert checked("input[name=muted][value='episode:updated']")
    assert not checked("input[name=muted][value='job:failed']")
    assert not checked("input[name='channel:job:failed'][value=email]")
    assert checked("input[name='channel:job:failed'][value=in_app]")
    assert checked("input[name='channel:file:ready'][value=email]")
    assert checked("#quiet-on")
    assert driver.find_element(By.ID, "quiet-start").get_attribute("value") == "21:30"
    assert driver.find_element(By.ID, "quiet-end").get_attribute("value") == "06:45"
    assert chosen("timezone") == "Europe/Paris"
    assert chosen("digest") == "daily"
    # Phone width: the page reflows instead of scrolling sideways.
    driver.set_window_size(390, 844)
    try:
        fits = "return document.documentElement.scrollWidth <= window.innerWidth"
        wait_until(lambda: driver.execute_script(fits), "no sideways scroll at 390 px")
    finally:
        driver.set_window_size(1280, 900)
    stored = api(server, "GET", "/notifications/preferences", viewer).json()
    assert stored["muted_types"] == ["episode:updated"]
    assert stored["quiet_hours"] == {"start": "21:30", "end": "06:45"}
    assert stored["timezone"] == "Europe/Paris" and stored["digest_frequency"] == "daily"
    assert stored["channels"]["job:failed"] == ["in_app"]
    assert stored["channels"]["file:ready"] == ["in_app", "email"]


def access_token(driver) -> str:
    return driver.execute_script("return JSON.parse(localStorage.getItem('ec.auth')).access_token")


def test_offline_banner_then_reconnects_by_itself_and_catches_up(app, browsers, editor, viewer):
    """Also with access tokens that expire in 2 s: the page refreshes them by itself (REST
    401s and a socket refused for an expired token) and stays signed in."""
    from app.models import User
    from app.services import episodes
    from tests.processes import free_port

    driver = browsers[0]
    port = free_port()
    short = {"JWT_ACCESS_TOKEN_SECONDS": "2"}
    with server_on_port(port, **short) as first:
        sign_in(driver, first.url, viewer)
        signed_in_with = access_token(driver)
        go(driver, first.url, "#/episodes")
        wait_until(lambda: live(driver) and "No episodes" in text(driver, "episode-list"), "the live list")
        assert not driver.find_element(By.ID, "offline").is_displayed()
        # A new episode appears in the open list live (episode_created), without a reload.
        created = requests.post(f"{first.url}/api/v1/episodes", headers=editor.headers, timeout=10,
                                json={"title": "Seen live", "episode_number": 6})
        assert created.status_code == 201
        wait_until(lambda: "Seen live" in text(driver, "episode-list"), "the episode created live")
    # The server is gone: the page says so instead of silently showing stale data.
    wait_until(lambda: driver.find_element(By.ID, "offline").is_displayed(), "the offline banner")

    # A change made while the page was offline (committed and delivered; no socket heard it).
    with app.app_context():
        episodes.create_episode(app.extensions["sqlalchemy"].session.get(User, editor.id),
                                {"title": "Made while offline", "episode_number": 7})

    with server_on_port(port, **short):
        # No reload, no click: the page reconnects by itself and catches up.
        wait_until(lambda: live(driver), "reconnected", timeout=30)
        wait_until(lambda: not driver.find_element(By.ID, "offline").is_displayed(), "the banner gone")
        wait_until(lambda: "Made while offline" in text(driver, "episode-list"), "the missed episode")
        assert "Seen live" in text(driver, "episode-list")
        # The first token expired long ago: the page lives on refreshed ones.
        assert access_token(driver) != signed_in_with
        assert text(driver, "me").startswith(viewer.name)


def test_admin_people_search_and_timeline_pages(server, browsers, admin, editor, viewer):
    admin_page, viewer_page = browsers
    ep = api(server, "POST", "/episodes", editor, json={"title": "Lighthouse", "episode_number": 3}).json()
    assert api(server, "PATCH", f"/episodes/{ep['id']}", editor,
               json={"description": "Foggy"}).status_code == 200

    sign_in(viewer_page, server.url, viewer)
    go(viewer_page, server.url, "#/people")
    wait_until(lambda: viewer.name in text(viewer_page, "people"), "the viewer online")

    sign_in(admin_page, server.url, admin)
    go(admin_page, server.url, "#/admin")
    # Live connection stats from GET /realtime/stats: both browsers are connected.
    wait_until(lambda: int(css(admin_page, "#realtime-stats .tile-value").text) >= 2, "users online")
    wait_until(lambda: len(admin_page.find_elements(By.CSS_SELECTOR, "#dashboard figure svg")) >= 3, "charts")
    assert "Events per minute" in text(admin_page, "dashboard")
    assert_labelled(admin_page)
    role = css(admin_page, f"#users select[data-user-id='{viewer.id}']")
    Select(role).select_by_value("editor")
    wait_until(lambda: api(server, "GET", "/auth/me", viewer).json()["role"] == "editor", "the role changed")

    # My status, set on one page, shows on another user's "who is online" without a reload.
    go(admin_page, server.url, "#/people")
    wait_until(lambda: css(admin_page, "#status-form[data-loaded=true]"), "the status form loaded")
    Select(css(admin_page, "#status-form select")).select_by_value("busy")
    css(admin_page, "#status-form input[name=message]").send_keys("In the edit suite")
    css(admin_page, "#status-form button[type=submit]").click()
    admin_row = f"#people li[data-user-id='{admin.id}']"
    wait_until(lambda: "In the edit suite" in css(viewer_page, admin_row).text
               and "Busy" in css(viewer_page, admin_row).text, "the status live")

    # Search over activity, then the resource's timeline with before/after.
    go(admin_page, server.url, "#/activity")
    search = wait_until(lambda: css(admin_page, "#search-form input[type=search]"), "search")
    search.send_keys("Lighthouse")
    css(admin_page, "#search-form button[type=submit]").click()
    wait_until(lambda: "Lighthouse" in text(admin_page, "activity")
               and "timeline" in text(admin_page, "activity"), "search results")
    link = f"#activity a[href='#/timeline/episode/{ep['id']}']"
    wait_until(lambda: css(admin_page, link).click() or True, "the timeline link clicked")  # may redraw
    wait_until(lambda: css(admin_page, "#timeline .changes .after").text == "Foggy", "the after value")
    assert css(admin_page, "#timeline .changes .before").text == "—"


def test_job_from_another_client_appears_live_then_cancel_and_retry(server, browsers, editor):
    driver = browsers[1]
    ep = api(server, "POST", "/episodes", editor, json={"title": "Long job", "episode_number": 4}).json()
    sign_in(driver, server.url, editor)
    go(driver, server.url, f"#/episodes/{ep['id']}")
    wait_until(lambda: live(driver) and "No jobs" in text(driver, "jobs"), "the empty job list")

    # Created elsewhere (another client of the API): the page hears job_created and progress.
    job = api(server, "POST", "/jobs", editor, json={
        "type": "noop", "episode_id": ep["id"], "params": {"duration_ms": 60000, "steps": 600}}).json()
    row = f"#jobs li[data-job-id='{job['id']}']"

    def status() -> str:
        return css(driver, row).get_attribute("data-status")

    progress = f"{row} progress"
    wait_until(lambda: int(css(driver, progress).get_attribute("value")) > 0, "live progress", timeout=30)
    click(driver, f"{row} [data-action=cancel]")
    wait_until(lambda: status() == "cancelled", "cancelled", timeout=30)

    click(driver, f"{row} [data-action=retry]")
    wait_until(lambda: status() in ("queued", "running"), "retried")
    assert api(server, "GET", f"/jobs/{job['id']}", editor).json()["status"] in ("queued", "running")
    wait_until(lambda: css(driver, f"{row} [data-action=cancel]"), "cancellable again")
    click(driver, f"{row} [data-action=cancel]")  # leave the worker free for other tests
    wait_until(lambda: status() == "cancelled", "cancelled again", timeout=30)
