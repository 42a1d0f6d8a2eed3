"""The studio in a real browser (headless Chromium from the distribution, driven by Selenium): generate
a video and watch it play, in two browsers at once; predict from an uploaded clip after a refused one;
the runs tab's plots; an evaluation. Screenshots go to the test's temporary folder.

Run with `make test-browser` (needs chromium and chromium-driver; `.ci/run` installs them)."""

import os
import shutil
import threading

import pytest
import torch

from vidiff.io.video import write_mp4
from vidiff.presets import get_preset
from vidiff.train import train

pytestmark = pytest.mark.browser
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
TINY = get_preset("cpu-tiny").override(
    [
        "train.steps=4",
        "train.save_every=2",
        "train.sample_every=2",
        "train.num_samples=1",
        "sample.steps=2",
        "train.fvd_every=2",
        "train.fvd_num=2",
        "train.log_every=1",
    ]
)


@pytest.fixture(scope="session")
def studio_url(tmp_path_factory):
    """A studio on a free loopback port over a folder with one tiny trained run."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("needs chromium and chromedriver (apt-get install chromium chromium-driver)")
    from vidiff.studio.app import Studio
    from vidiff.studio.server import make_server

    runs = tmp_path_factory.mktemp("runs")
    train(TINY, runs / "tiny", progress=False)
    studio = Studio(runs)
    server = make_server(studio, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    studio.close()


def chromium():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--autoplay-policy=no-user-gesture-required",
        "--window-size=1400,1000",
    ]:
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    return driver


@pytest.fixture
def browsers():
    drivers = []
    yield lambda: drivers.append(chromium()) or drivers[-1]
    for d in drivers:
        d.quit()


def wait(driver, condition, timeout=180):
    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: condition(d))


def visible_text(driver, element_id):
    e = driver.find_element(By.ID, element_id)
    return e.text if e.is_displayed() else ""


def open_studio(driver, url):
    driver.get(url)
    wait(
        driver,
        lambda d: (
            Select(d.find_element(By.ID, "gen-run")).options
            and d.find_element(By.ID, "gen-checkpoint").find_elements(By.TAG_NAME, "option")
        ),
        120,
    )


def generate(driver, seed, num=1):
    driver.find_element(By.ID, "gen-num").clear()
    driver.find_element(By.ID, "gen-num").send_keys(str(num))
    driver.find_element(By.ID, "gen-seed").clear()
    driver.find_element(By.ID, "gen-seed").send_keys(str(seed))
    driver.find_element(By.ID, "gen-frames").send_keys("9")  # FVD needs 9 frames or more
    driver.find_element(By.ID, "gen-steps").send_keys("2")
    Select(driver.find_element(By.ID, "gen-sampler")).select_by_value("ddim")
    driver.find_element(By.ID, "gen-go").click()


def plays(driver, css):
    """Whether the first `css` video plays: it has data, no error, and its currentTime moves."""
    video = f"document.querySelector('{css}')"
    wait(driver, lambda d: d.execute_script(f"return {video} && {video}.readyState >= 2"), 120)
    first = driver.execute_script(f"return {video}.currentTime")
    try:
        wait(driver, lambda d: d.execute_script(f"return {video}.currentTime") != first, 120)
    except Exception:
        return False
    return driver.execute_script(f"return {video}.error") is None


def test_generate_in_two_browsers_condition_runs_and_evaluate(studio_url, browsers, tmp_path):
    a, b = browsers(), browsers()
    open_studio(a, studio_url)
    open_studio(b, studio_url)
    assert Select(a.find_element(By.ID, "gen-run")).first_selected_option.text == "tiny"
    samplers = [o.get_attribute("value") for o in Select(a.find_element(By.ID, "gen-sampler")).options]
    from vidiff.diffusion.sampling import SAMPLERS

    assert samplers == ["", *sorted(SAMPLERS)]  # the model's default, then the one registry
    generate(a, 0, num=2)
    generate(b, 5)  # a second browser at the same time: queued behind the first
    for driver, seed in ((a, 0), (b, 5)):
        wait(
            driver,
            lambda d: d.find_elements(By.CSS_SELECTOR, "#gen-results video.sample") or visible_text(d, "gen-message"),
        )
        assert visible_text(driver, "gen-message") == ""
        assert plays(driver, "#gen-results video.sample")
        command = driver.find_element(By.ID, "gen-command").text
        assert command.startswith("vidiff sample --checkpoint ") and f"--seed {seed} " in command
        assert "--sampler ddim --steps 2 --frames 9 --out " in command
        links = [x.text for x in driver.find_elements(By.CSS_SELECTOR, "#gen-results .links a")]
        assert links == ["MP4", "GIF"] * (2 if driver is a else 1)
    a.save_screenshot(str(tmp_path / "generate.png"))
    b.save_screenshot(str(tmp_path / "generate_second_browser.png"))

    # condition: a file that is not a video is refused in the page; a real clip is continued
    a.find_element(By.ID, "tab-condition").click()
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video")
    a.find_element(By.ID, "cond-file").send_keys(str(bad))
    wait(a, lambda d: "cannot be read as a video" in visible_text(d, "cond-message"), 120)
    a.save_screenshot(str(tmp_path / "condition_bad_upload.png"))
    clip = tmp_path / "clip.mp4"
    x = torch.linspace(-1, 1, 16)
    write_mp4(clip, torch.stack([x.view(1, 16, 1).expand(3, 16, 16).roll(i, -1) for i in range(6)], dim=1))
    a.find_element(By.ID, "cond-file").send_keys(str(clip))
    wait(a, lambda d: "uploaded clip.mp4: 6 frames" in d.find_element(By.ID, "cond-upload-info").text, 120)
    assert visible_text(a, "cond-message") == ""
    Select(a.find_element(By.ID, "cond-task")).select_by_value("predict")
    a.find_element(By.ID, "cond-steps").send_keys("2")
    a.find_element(By.ID, "cond-go").click()
    wait(a, lambda d: d.find_elements(By.CSS_SELECTOR, "#cond-results video.output") or visible_text(d, "cond-message"))
    assert visible_text(a, "cond-message") == ""
    assert a.find_element(By.ID, "cond-command").text.startswith("vidiff predict --checkpoint ")
    for css in ("#cond-results video.input", "#cond-results video.output"):
        assert plays(a, css), css
    wait(a, lambda d: d.execute_script("return document.getElementById('cond-filmstrip').naturalWidth > 0"), 120)
    assert "given frames (2 of 4: 0, 1)" in a.find_element(By.CSS_SELECTOR, "#cond-results .legend").text
    a.save_screenshot(str(tmp_path / "condition.png"))

    # runs: the table, the loss and FVD plots, the sample grids, two runs side by side
    a.find_element(By.ID, "tab-runs").click()
    wait(a, lambda d: d.find_elements(By.CSS_SELECTOR, "#run-a svg.plot.loss path.line"), 120)
    row = [c.text for c in a.find_elements(By.CSS_SELECTOR, "#runs-table tbody tr td")]
    assert row[:3] == ["tiny", "cpu-tiny", "4 / 4"] and float(row[3]) > 0 and float(row[4]) > 0
    assert a.find_elements(By.CSS_SELECTOR, "#run-a svg.plot.fvd path.line")
    grids = a.find_elements(By.CSS_SELECTOR, "#run-a .grids figcaption")
    assert [g.text for g in grids] == ["step 2", "step 4"]
    wait(
        a,
        lambda d: d.execute_script(
            "return [...document.querySelectorAll('#run-a .grids img')].every((i) => i.naturalWidth > 0)"
        ),
        120,
    )
    Select(a.find_element(By.ID, "runs-b")).select_by_value("tiny")
    wait(a, lambda d: d.find_elements(By.CSS_SELECTOR, "#run-b svg.plot.loss path.line"), 120)
    a.save_screenshot(str(tmp_path / "runs.png"))

    # evaluate: FVD of the first browser's samples against the builtin data, with its report
    a.find_element(By.ID, "tab-evaluate").click()
    wait(a, lambda d: Select(d.find_element(By.ID, "eval-fake")).options, 120)
    choice = [o.text for o in Select(a.find_element(By.ID, "eval-fake")).options if "2 videos × 9 frames" in o.text]
    assert len(choice) == 1  # the first browser's; the second's (one video) and the prediction are listed too
    Select(a.find_element(By.ID, "eval-fake")).select_by_visible_text(choice[0])
    a.find_element(By.ID, "eval-frames").clear()
    a.find_element(By.ID, "eval-frames").send_keys("9")
    a.find_element(By.ID, "eval-go").click()
    wait(a, lambda d: d.find_elements(By.ID, "eval-report") or visible_text(d, "eval-message"))
    assert visible_text(a, "eval-message") == ""
    report = a.find_element(By.ID, "eval-report").text
    assert '"fvd":' in report and '"fvd_name": "fvd2_9f"' in report
    a.save_screenshot(str(tmp_path / "evaluate.png"))
    shots = os.environ.get("VIDIFF_STUDIO_SCREENSHOTS")
    if shots:  # keep them where a person can look
        shutil.copytree(tmp_path, shots, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.mp4"))
