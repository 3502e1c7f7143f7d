"""The memory console in a real headless Chromium (Debian's `chromium` + `chromium-driver`, through Selenium)
against the shared test sidecar: sign in, add, search, see an injection in the playground, delete; tenant isolation;
a bad key refused. Screenshots of every view go to $MEMSIDECAR_SCREENSHOTS (docs/operations.md's come from here) or
a temp dir.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import API_KEYS, auth

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    if os.environ.get("CI"):
        raise RuntimeError("CI must have Debian's chromium and chromium-driver (.ci/run installs them)")
    pytest.skip("needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver",
                allow_module_level=True)

from selenium import webdriver  # noqa: E402  (only once the browser is known to be there)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

LAPTOP = (1366, 900)
PHONE = (390, 844)


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    directory = Path(os.environ.get("MEMSIDECAR_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture()
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", f"--user-data-dir={tmp_path / 'chromium'}", "--force-device-scale-factor=1"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_window_size(*LAPTOP)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, css: str, timeout: float = 60):
    return WebDriverWait(driver, timeout).until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css)))


def sign_in(driver, base_url: str, key: str) -> None:
    driver.get(f"{base_url}/console/signin")
    field = driver.find_element(By.ID, "api_key")
    assert driver.switch_to.active_element == field  # focused on arrival: sign in by keyboard alone
    field.send_keys(key + Keys.ENTER)


def fill(driver, element_id: str, text: str) -> None:
    field = driver.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(text)


def shot(driver, directory: Path, name: str) -> None:
    """The whole page (up to 2,400 pixels tall) at the window's width."""
    width = driver.get_window_size()["width"]
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, min(2400, max(600, height + 140)))
    assert driver.save_screenshot(str(directory / f"{name}.png"))


def test_a_bad_key_is_refused(sidecar, browser, screenshots):
    sign_in(browser, sidecar.base_url, "not-a-key")
    error = wait_for(browser, '[data-testid="error"]')
    assert "not accepted" in error.text
    assert browser.current_url.endswith("/console/signin")
    assert browser.get_cookie("memsidecar_console") is None
    browser.get(f"{sidecar.base_url}/console/memories")  # no session: back to sign-in
    assert browser.current_url.endswith("/console/signin")
    shot(browser, screenshots, "signin")


def test_add_search_inject_delete_and_isolation(sidecar, browser, screenshots):
    user = f"console-{uuid.uuid4().hex[:6]}"
    fact = f"My cat is named Zorblax-{uuid.uuid4().hex[:4]}"
    sign_in(browser, sidecar.base_url, API_KEYS["tenant-a"])
    assert "tenant-a" in wait_for(browser, '[data-testid="tenant"]').text, browser.page_source[-2000:]
    cookie = browser.get_cookie("memsidecar_console")
    assert cookie["httpOnly"] and API_KEYS["tenant-a"] not in cookie["value"]

    # add a memory through the form
    fill(browser, "add-user", user)
    fill(browser, "add-content", fact)
    browser.find_element(By.ID, "add-content").find_element(By.XPATH, "./ancestor::form").submit()
    assert "Memory added" in wait_for(browser, '[data-testid="flash"]').text
    assert fact in browser.find_element(By.CSS_SELECTOR, '[data-testid="memories"]').text
    assert user in browser.find_element(By.CSS_SELECTOR, '[data-testid="users"]').text
    assert API_KEYS["tenant-a"] not in browser.page_source and "key-a" not in browser.current_url

    # find it by semantic search, with a score
    fill(browser, "f-q", "what is the name of my cat")
    browser.find_element(By.ID, "f-q").submit()
    rows = wait_for(browser, '[data-testid="memories"]').find_elements(By.CSS_SELECTOR, "tbody tr")
    assert fact in rows[0].text
    assert float(rows[0].find_element(By.CSS_SELECTOR, '[data-testid="score"]').text) > 0
    shot(browser, screenshots, "memories")

    # its detail page shows the strength curve
    rows[0].find_element(By.LINK_TEXT, fact).click()
    assert fact in wait_for(browser, '[data-testid="memory"]').text
    assert browser.find_elements(By.CSS_SELECTOR, "figure.chart svg polyline")
    shot(browser, screenshots, "memory")

    # the playground shows it injected, with the memory block's tokens
    browser.get(f"{sidecar.base_url}/console/playground?user_id={user}")
    fill(browser, "p-message", "What is my cat called?")
    browser.find_element(By.ID, "p-message").submit()
    injected = wait_for(browser, '[data-testid="injected"]', timeout=120)
    assert fact in injected.text
    figures = browser.find_element(By.CSS_SELECTOR, '[data-testid="turn-figures"]').text
    assert "memory block" in figures and "memory block 0 tokens" not in figures
    for turn, message in enumerate(["And what did I just ask?", "Tell me once more, please."], start=2):
        fill(browser, "p-message", message)
        browser.find_element(By.ID, "p-message").submit()
        WebDriverWait(browser, 120).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "li.turn")) == turn)
    latest = browser.find_element(By.CSS_SELECTOR, '[data-testid="turn-figures"]').text
    # the third turn's prompt starts with a full block of the second's: served from activation memory (the test
    # sidecar's engine prefix cache is off)
    assert "served from cache" in latest, latest
    shot(browser, screenshots, "playground")

    # lifecycle, adapters and tiers views render for this tenant
    browser.get(f"{sidecar.base_url}/console/lifecycle?user_id={user}")
    assert int(wait_for(browser, '[data-testid="tiers"]').find_element(By.CSS_SELECTOR, "td.num").text) >= 1
    shot(browser, screenshots, "lifecycle")
    browser.get(f"{sidecar.base_url}/console/adapters")
    wait_for(browser, '[data-testid="adapters"]')
    shot(browser, screenshots, "adapters")
    browser.get(f"{sidecar.base_url}/console/tiers")
    assert "KV blocks" in wait_for(browser, '[data-testid="budgets"]').text
    assert "Tier scheduler: budget and usage per tier" in browser.page_source
    shot(browser, screenshots, "tiers")
    browser.set_window_size(*PHONE)
    browser.get(f"{sidecar.base_url}/console/memories?user_id={user}")
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
    browser.set_window_size(*PHONE)
    shot(browser, screenshots, "memories-phone")
    browser.set_window_size(*LAPTOP)

    # a second tenant sees none of it, even by id (tenant-c: a key no other test spends its rate on)
    memory_id = _memory_id(sidecar.base_url, user, fact)
    browser.delete_all_cookies()
    sign_in(browser, sidecar.base_url, API_KEYS["tenant-c"])
    assert "tenant-c" in wait_for(browser, '[data-testid="tenant"]').text, browser.page_source[-2000:]
    assert user not in browser.page_source and fact not in browser.page_source
    browser.get(f"{sidecar.base_url}/console/memories/{memory_id}")
    assert fact not in browser.page_source and wait_for(browser, '[data-testid="error"]')
    browser.get(f"{sidecar.base_url}/console/memories?q=cat+named+Zorblax")
    assert fact not in browser.page_source

    # back as tenant-a: delete it, and it is gone
    browser.delete_all_cookies()
    sign_in(browser, sidecar.base_url, API_KEYS["tenant-a"])
    browser.get(f"{sidecar.base_url}/console/memories?user_id={user}")
    row = wait_for(browser, f'tr[data-memory-id="{memory_id}"]')
    row.find_element(By.CSS_SELECTOR, "button.danger").click()
    WebDriverWait(browser, 10).until(expected_conditions.alert_is_present()).accept()
    assert "Memory deleted" in wait_for(browser, '[data-testid="flash"]').text
    assert fact not in browser.find_element(By.CSS_SELECTOR, '[data-testid="memories"]').text
    assert httpx.get(f"{sidecar.base_url}/v1/memories/{memory_id}", headers=auth()).status_code == 404
    assert API_KEYS["tenant-a"] not in sidecar.log_path.read_text(errors="replace")  # never logged


def test_forms_without_the_session_token_are_refused(sidecar):
    with httpx.Client(base_url=sidecar.base_url) as client:
        assert client.post("/console/signin", data={"api_key": API_KEYS["tenant-a"]}).status_code == 303
        response = client.post("/console/memories", data={"user_id": "csrf-user", "content": "forged"})
        assert response.status_code == 403
        forged = client.post("/console/memories", data={"user_id": "csrf-user", "content": "forged", "csrf": "x"})
        assert forged.status_code == 403
        for odd in ("%2E%2E", ".%2E", "-x", "a%3Fb"):  # never forwarded into an API path
            assert client.get(f"/console/memories/{odd}").status_code in (400, 404)
    listing = httpx.get(f"{sidecar.base_url}/v1/memories", params={"user_id": "csrf-user"}, headers=auth())
    assert listing.json()["data"] == []


def test_console_pages_forbid_framing_and_inline_script(sidecar):
    response = httpx.get(f"{sidecar.base_url}/console/signin")
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert response.headers["cache-control"] == "no-store"
    assert "<script>" not in response.text


def _memory_id(base_url: str, user: str, content: str) -> str:
    listing = httpx.get(f"{base_url}/v1/memories", params={"user_id": user}, headers=auth()).json()["data"]
    return next(m["id"] for m in listing if m["content"] == content)
