"""Headless Chromium from Debian's packages (``chromium``, ``chromium-driver``) driven by Selenium through the
system's chromedriver: the driver's path is given, so Selenium Manager never runs and nothing is downloaded."""

from __future__ import annotations

import base64
import contextlib
import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
LAYOUTS = {"phone": (390, 844), "desktop": (1280, 900)}  # CSS pixels
WAIT = 120  # seconds: headless Chromium on 2 shared cores is slow, never this slow


@contextlib.contextmanager
def chromium(layout: str, locale: str = ""):
    """A headless Chromium at a phone's size (touch, 2 device pixels per CSS pixel) or a desktop's; with ``locale``
    (``ru-RU``), a browser of that language (its Accept-Language and navigator.languages)."""
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip("Debian's chromium and chromium-driver are not installed: apt-get install -y chromium "
                    "chromium-driver (.ci/run does it)")
    os.environ["SE_OFFLINE"] = "true"  # should Selenium Manager ever run, it must not download anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--no-first-run", "--disable-extensions", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--disable-default-apps"):
        options.add_argument(argument)
    if locale:
        options.add_argument(f"--lang={locale}")
        options.add_experimental_option("prefs", {"intl.accept_languages": f"{locale},{locale.split('-')[0]}"})
    width, height = LAYOUTS[layout]
    if layout == "phone":
        options.add_experimental_option("mobileEmulation", {
            "deviceMetrics": {"width": width, "height": height, "pixelRatio": 2, "touch": True}})
    else:
        options.add_argument(f"--window-size={width},{height}")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.set_page_load_timeout(WAIT)
        driver.set_script_timeout(WAIT)
        yield driver
    finally:
        driver.quit()


def wait_for(driver, condition, what: str):
    """Poll ``condition(driver)`` until it is truthy (at most WAIT seconds); returns its value."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(condition, f"timed out waiting for {what}")


def full_page_screenshot(driver, path: Path) -> Path:
    """A PNG of the whole page, below the fold too (DevTools' captureBeyondViewport)."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"captureBeyondViewport": True, "clip": {
        "x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})
    path.write_bytes(base64.b64decode(shot["data"]))
    return path
