"""`vidgpt2 app`: the caption engine, the explanation views, the Space template, and the page in headless Chromium."""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio", reason="the `app` extra is not installed: pip install 'vidgpt2[app]'")

from tests.tiny import save_tiny_captioner, tiny_model, tiny_tokenizer  # noqa: E402
from tests.video_fixtures import write_test_clip  # noqa: E402
from vidgpt2 import VidGPT2Processor, VidGPT2VideoProcessor  # noqa: E402
from vidgpt2.app import (  # noqa: E402
    MEAN_LABEL,
    AppInputError,
    CaptionEngine,
    attention_figure,
    build_app,
    frame_weights,
    heatmap_overlays,
    word_choices,
    word_index,
    write_examples,
    write_space,
)
from vidgpt2.cli import main as cli_main  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_captioner(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def engine(model_dir) -> CaptionEngine:
    return CaptionEngine(str(model_dir))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_test_clip(tmp_path_factory.mktemp("clips") / "clip.mp4", num_frames=16)


@pytest.fixture(scope="module")
def result(engine, clip):
    return engine.run(str(clip), num_beams=1, max_new_tokens=5)


def test_engine_captions_explains_and_times_each_stage(result, engine, clip):
    assert result.caption and result.caption == result.explanation.caption
    assert len(result.explanation.tokens) == 5
    assert list(result.timings) == ["read + preprocess video", "caption (float32)", "explain (attention + heatmaps)"]
    assert all(seconds > 0 for seconds in result.timings.values())
    beams = engine.run(str(clip), num_beams=3, max_new_tokens=3)
    assert len(beams.caption.split()) == 3


def test_choosing_a_word_changes_the_frame_weights_and_ranking(result):
    explanation = result.explanation
    choices = word_choices(explanation)
    assert choices[0] == MEAN_LABEL and len(choices) == 1 + len(explanation.tokens)
    assert word_index(choices[0]) is None and word_index(choices[2]) == 1
    np.testing.assert_allclose(frame_weights(explanation, None), explanation.frame_attention)
    for i in range(len(explanation.tokens)):
        weights = frame_weights(explanation, i)
        np.testing.assert_allclose(weights, explanation.token_frame_attention[i])
        overlays = heatmap_overlays(explanation, i)
        assert len(overlays) == explanation.num_frames
        ranked = [float(label.rsplit(" ", 1)[1]) for _, label in overlays]
        assert ranked == sorted(ranked, reverse=True)
        image = overlays[0][0]
        assert image.dtype == np.uint8 and image.shape == explanation.frames.shape[1:]
    figure = attention_figure(explanation, 0)
    heights = [bar.get_height() for bar in figure.axes[0].patches]
    np.testing.assert_allclose(heights, explanation.token_frame_attention[0], rtol=1e-6)
    with pytest.raises(IndexError):
        frame_weights(explanation, len(explanation.tokens))


def test_spatial_model_has_a_heatmap_per_word(tmp_path):
    from vidgpt2.explanations import explain

    model = tiny_model(visual_tokens="spatial")
    video_processor = VidGPT2VideoProcessor(num_frames=4, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = VidGPT2Processor(video_processor=video_processor, tokenizer=tiny_tokenizer())
    explanation = explain(model, processor, np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8), max_new_tokens=3)
    first, second = heatmap_overlays(explanation, 0), heatmap_overlays(explanation, 1)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, second))


def test_unreadable_and_unsupported_files_give_readable_errors(engine, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a video")
    with pytest.raises(AppInputError, match=r"notes.txt is not a supported video file \(.txt\)"):
        engine.run(str(text))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 512)
    with pytest.raises(AppInputError, match="Could not read broken.mp4 as a video") as caught:
        engine.run(str(broken))
    assert str(tmp_path) not in str(caught.value), "the message names the file, not its temporary path"
    with pytest.raises(AppInputError, match="No video"):
        engine.run(None)


def test_write_space_writes_front_matter_and_refuses_to_overwrite(tmp_path, capsys):
    assert cli_main(["app", "--model", "user/vidgpt2-msvd", "--write-space", str(tmp_path / "space")]) == 0
    readme = (tmp_path / "space" / "README.md").read_text()
    assert readme.startswith("---\n") and "sdk: gradio" in readme and "app_file: app.py" in readme
    assert "- user/vidgpt2-msvd" in readme
    app_py = (tmp_path / "space" / "app.py").read_text()
    compile(app_py, "app.py", "exec")
    assert 'CaptionEngine("user/vidgpt2-msvd")' in app_py
    # vidgpt2 is not on PyPI: the package travels in the Space (tests/test_space.py runs it from there)
    assert "vidgpt2" not in (tmp_path / "space" / "requirements.txt").read_text()
    assert (tmp_path / "space" / "vidgpt2" / "app.py").is_file()
    with pytest.raises(FileExistsError, match="already has"):
        write_space("user/vidgpt2-msvd", tmp_path / "space")


# --- the page in a real browser ---------------------------------------------------------------------------------------
def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def browser_page(engine, tmp_path_factory):
    found = _chromium()
    if found is None:
        pytest.skip("no chromium + chromedriver on PATH (Debian: apt-get install chromium chromium-driver; .ci/run does)")
    pytest.importorskip("selenium", reason="selenium is in the `test` extra")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    examples = write_examples(tmp_path_factory.mktemp("examples"), count=2, num_frames=4)
    page = build_app(engine, examples)
    port = _free_port()
    page.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1600"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(found[1]), options=options)
    driver.get(f"http://127.0.0.1:{port}/")
    try:
        yield driver
    finally:
        driver.quit()
        page.close()


def _wait(driver, condition, timeout: float = 60.0, what: str = ""):
    """Poll `condition` until it is truthy. The page re-renders outputs (Gradio replaces the figure's <img>), so an
    element found in one poll can be gone before it is read: that poll counts as not yet, like a missing element."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, timeout, poll_frequency=0.25, ignored_exceptions=(StaleElementReferenceException,))
    return wait.until(condition, message=f"timed out waiting for {what}")


def _upload(driver, path: Path) -> None:
    from selenium.webdriver.common.by import By

    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#video-input input[type=file]"), what="the upload input")
    driver.find_element(By.CSS_SELECTOR, "#video-input input[type=file]").send_keys(str(path))


def _clear_video(driver) -> None:
    from selenium.webdriver.common.by import By

    for button in driver.find_elements(By.CSS_SELECTOR, "#video-input button[aria-label='Clear'], #video-input button[title='Clear']"):
        if button.is_displayed():
            button.click()
            return


def test_browser_upload_caption_explore_words_and_error(browser_page, clip, tmp_path):
    from selenium.webdriver.common.by import By

    driver = browser_page
    _wait(driver, lambda d: d.find_elements(By.ID, "caption-button"), what="the page")
    _upload(driver, clip)
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#video-input video"), what="the uploaded video")
    driver.find_element(By.CSS_SELECTOR, "#caption-button").click()

    def caption_text(d):
        value = d.find_element(By.CSS_SELECTOR, "#caption-output textarea").get_attribute("value")
        return value or False

    caption = _wait(driver, caption_text, what="the caption")
    assert len(caption.split()) >= 1
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#attention-plot img"), what="the attention figure")
    _wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#heatmaps img")) >= 4, what="the heatmaps")
    assert "explain (attention + heatmaps)" in driver.find_element(By.ID, "timings").text
    before = driver.find_element(By.CSS_SELECTOR, "#attention-plot img").get_attribute("src")

    # choose another word: the figure is redrawn for it
    driver.find_element(By.CSS_SELECTOR, "#word-choice input").click()
    options = _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#word-choice [role=option]"), what="the word list")
    options[-1].click()
    _wait(
        driver, lambda d: d.find_element(By.CSS_SELECTOR, "#attention-plot img").get_attribute("src") != before,
        what="the figure of the chosen word",
    )
    screenshots = os.environ.get("VIDGPT2_SCREENSHOT_DIR")
    driver.save_screenshot(str(Path(screenshots or tmp_path) / "app.png"))

    # error path: a file that is not a video shows a readable message in the page
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 512)
    _clear_video(driver)
    _upload(driver, broken)
    time.sleep(1.0)
    driver.find_element(By.CSS_SELECTOR, "#caption-button").click()
    message = _wait(
        driver, lambda d: "broken.mp4" in d.find_element(By.TAG_NAME, "body").text and d.find_element(By.TAG_NAME, "body").text,
        what="the error message",
    )
    assert "Could not read broken.mp4 as a video" in message or "not a supported video" in message
    if screenshots:
        driver.save_screenshot(str(Path(screenshots) / "app_error.png"))
