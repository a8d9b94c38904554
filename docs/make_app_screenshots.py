"""Screenshots of `vidgpt2 app` for the README: serve the page for MODEL_DIR, drive it in headless Chromium.

    python docs/make_app_screenshots.py MODEL_DIR VIDEO [OUT_DIR=docs]

Writes OUT_DIR/app.png (a captioned clip, a word chosen) and OUT_DIR/app_error.png (a file that is not a video).
Needs the `app` and `test` extras and Debian's chromium + chromium-driver.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from vidgpt2.app import CaptionEngine, build_app, write_examples


def main(model_dir: str, video: str, out_dir: str = "docs") -> None:
    out = Path(out_dir)
    page = build_app(CaptionEngine(model_dir), write_examples(tempfile.mkdtemp()))
    page.launch(server_name="127.0.0.1", server_port=7899, prevent_thread_lock=True, quiet=True)
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1500"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(), options=options)
    wait = WebDriverWait(driver, 120, poll_frequency=0.25)
    try:
        driver.get("http://127.0.0.1:7899/")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#video-input input[type=file]"))
        driver.find_element(By.CSS_SELECTOR, "#video-input input[type=file]").send_keys(str(Path(video).resolve()))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#video-input video"))
        driver.find_element(By.ID, "caption-button").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#heatmaps img")) >= 4)
        driver.find_element(By.CSS_SELECTOR, "#word-choice input").click()
        options_list = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#word-choice [role=option]"))
        options_list[min(3, len(options_list) - 1)].click()
        time.sleep(3)
        driver.save_screenshot(str(out / "app.png"))
        broken = Path(tempfile.mkdtemp()) / "holiday.mp4"
        broken.write_bytes(b"not a video at all" * 64)
        for button in driver.find_elements(By.CSS_SELECTOR, "#video-input button[aria-label='Clear']"):
            if button.is_displayed():
                button.click()
        driver.find_element(By.CSS_SELECTOR, "#video-input input[type=file]").send_keys(str(broken))
        time.sleep(1)
        driver.find_element(By.ID, "caption-button").click()
        wait.until(lambda d: "holiday.mp4" in d.find_element(By.TAG_NAME, "body").text)
        time.sleep(1)
        driver.save_screenshot(str(out / "app_error.png"))
    finally:
        driver.quit()
        page.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
