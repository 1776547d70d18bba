"""The chat web page in a real headless Chromium (selenium + chromedriver) against a real server on loopback."""

from __future__ import annotations

import shutil

import pytest

from tests.infer.serving import running_server
from vistune.infer.chat import ChatSession
from vistune.infer.generate import GenerationConfig
from vistune.infer.server import create_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER),
        reason="needs Debian's chromium + chromium-driver (.ci/run installs them)",
    ),
]


@pytest.fixture()
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1100,800",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _answer(loaded, image_path) -> str:
    session = ChatSession(loaded, config=GenerationConfig())
    session.set_image(image_path)
    return session.ask("What shape is it?")


@pytest.mark.parametrize("placement", ["before", "after"])
def test_page_chat_with_an_image_streams_the_models_answer(browser, loaded, image_path, tmp_path, placement):
    """The page places the image where the served model expects it (`/v1/models`' image_placement)."""
    import dataclasses

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    loaded = dataclasses.replace(loaded, image_placement=placement)
    expected = _answer(loaded, image_path)
    other = _answer(
        dataclasses.replace(loaded, image_placement={"before": "after", "after": "before"}[placement]),
        image_path,
    )
    assert (
        expected != other
    )  # the placement changes this model's answer, so the page's answer tells which it used

    with running_server(create_app(loaded)) as url:
        browser.get(url)
        browser.find_element(By.ID, "file").send_keys(str(image_path))
        WebDriverWait(browser, 20).until(
            lambda d: d.find_element(By.ID, "preview").get_attribute("src").startswith("data:image")
        )
        browser.find_element(By.ID, "question").send_keys("What shape is it?")
        browser.find_element(By.ID, "send").click()
        WebDriverWait(browser, 120).until(lambda d: d.find_element(By.ID, "send").is_enabled())
        bubbles = browser.find_elements(By.CSS_SELECTOR, ".msg")
        assert [b.get_attribute("class") for b in bubbles] == ["msg user", "msg assistant"]
        assert bubbles[1].text.strip() == expected
        assert browser.find_element(By.ID, "status").text == ""
        browser.save_screenshot(str(tmp_path / "page.png"))
