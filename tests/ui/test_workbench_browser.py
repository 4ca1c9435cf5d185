"""The workbench in a real browser: headless Chromium from the system packages, driven by Selenium.

Selenium talks to the system's ``chromedriver`` (Debian: ``apt-get install chromium chromium-driver``);
nothing is downloaded. Without them these tests are skipped. Set ``AYAR_SCREENSHOTS=DIR`` to save
the screenshots the README shows.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from ui_helpers import write_recipe

pytestmark = pytest.mark.slow

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
DRIVER = shutil.which("chromedriver")
if CHROMIUM is None or DRIVER is None:
    pytest.skip("headless browser tests need the system's Chromium and chromedriver "
                "(apt-get install chromium chromium-driver)", allow_module_level=True)


@pytest.fixture(scope="module")
def site(workspace):
    """The workbench on a free loopback port, served by uvicorn in a thread."""
    import uvicorn

    from ayar.workbench.app import create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(workspace), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the workbench did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=60)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait_for(condition, timeout: float = 120.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def text_of(browser, element_id: str) -> str | None:
    """An element's text, or None while the page that has it is still loading."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return browser.find_element(By.ID, element_id).text
    except (NoSuchElementException, StaleElementReferenceException):
        return None


def shot(browser, name: str) -> None:
    folder = os.environ.get("AYAR_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(folder) / f"{name}.png"))


def test_runs_table_shows_the_finished_run(browser, site):
    from selenium.webdriver.common.by import By

    browser.get(site + "/")
    row = browser.find_element(By.CSS_SELECTOR, 'tr[data-run="runs/run-a"]')
    assert "finished" in row.find_element(By.CLASS_NAME, "status").text
    shot(browser, "runs")
    row.find_element(By.LINK_TEXT, "runs/run-a").click()
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#curve svg polyline"), 30, "the run page's curve")
    shot(browser, "run")


def test_a_launched_training_run_completes_and_its_curve_appears(browser, site, workspace, tiny_llama):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    write_recipe(workspace, tiny_llama, "browser.yaml", "runs/from-browser", steps=24)
    browser.get(site + "/launch")
    Select(browser.find_element(By.ID, "recipe")).select_by_value("browser.yaml")
    browser.find_element(By.ID, "check").click()
    assert wait_for(lambda: text_of(browser, "check-result"), what="the check") == "ok"
    shot(browser, "launch")
    browser.find_element(By.ID, "start").click()
    metrics = workspace / "runs" / "from-browser" / "metrics.jsonl"
    wait_for(metrics.is_file, what="the first metrics line")
    browser.get(site + "/runs/runs/from-browser")  # the page refreshes its curve while training

    def final_points():
        try:
            lines = browser.find_elements(By.CSS_SELECTOR, "#curve svg polyline")
            return lines and lines[0].get_attribute("data-points") == "24" and text_of(browser, "status") == "finished"
        except StaleElementReferenceException:  # the script replaced the chart while it was read
            return False

    wait_for(final_points, timeout=240, what="the finished curve")
    browser.get(site + "/")
    row = browser.find_element(By.CSS_SELECTOR, 'tr[data-run="runs/from-browser"]')
    assert "finished" in row.text and "24" in row.text


def test_a_blinded_rating_round_trip(browser, site, workspace):
    from selenium.webdriver.common.by import By

    from ayar.eval.human import export_set, rater_tokens
    from ayar.eval.human_results import results

    run = workspace / "runs" / "run-b"
    (run / "eval").mkdir(exist_ok=True)
    shutil.copy(workspace / "runs" / "run-a" / "eval" / "examples.jsonl", run / "eval" / "examples.jsonl")
    export_set(run, 4, raters=["dr-ayla"], seed=11, overwrite=True)
    key = json.loads((run / "eval" / "human" / "key.json").read_text())["items"]
    browser.get(f"{site}/rate/runs/run-b/{rater_tokens(run)['dr-ayla']}")
    plan = ["win", "loss", "tie_good", "win"]
    for number, outcome in enumerate(plan):
        wait_for(lambda n=number: text_of(browser, "progress") == f"{n} of 4", 30, "the next item")
        page = browser.page_source
        assert "run-b" not in browser.title + page.split("<form")[0] and "tuned" not in page
        item = browser.find_element(By.NAME, "item").get_attribute("value")
        x_side = key[item]["a"] == "x" and "a" or "b"
        verdict = {"win": x_side, "loss": "b" if x_side == "a" else "a", "tie_good": "both_good"}[outcome]
        if number == 0:
            shot(browser, "rate")
        browser.find_element(By.ID, f"verdict-{verdict}").click()
    wait_for(lambda: text_of(browser, "finished"), 30, "the end of the set")
    tally = results(run)["per_rater"]["dr-ayla"]
    assert (tally["win"], tally["loss"], tally["tie"]) == (2, 1, 1)


def test_the_chat_page_streams_a_reply(browser, site):
    from selenium.webdriver.common.by import By

    browser.get(site + "/runs/runs/run-a/chat")
    form = browser.find_element(By.ID, "chat")
    api, tuned = form.get_attribute("data-api"), form.get_attribute("data-models").split("|")[1]
    browser.find_element(By.ID, "chat-prompt").send_keys("Ürün: kırmızı renkli güzel bir çanta")
    browser.find_element(By.ID, "send").click()
    for box in ("reply-base", "reply-tuned"):
        wait_for(lambda box=box: browser.find_element(By.ID, box).get_attribute("data-done") == "yes",
                 what=f"{box} to finish streaming")
    shot(browser, "chat")
    whole = httpx.post(f"{site}{api}/v1/chat/completions", timeout=60, json={
        "model": tuned, "messages": [{"role": "user", "content": "Ürün: kırmızı renkli güzel bir çanta"}],
        "temperature": 0, "max_tokens": 64}).json()["choices"][0]["message"]["content"]
    streamed = browser.execute_script("return document.getElementById('reply-tuned').textContent")
    assert streamed == whole
