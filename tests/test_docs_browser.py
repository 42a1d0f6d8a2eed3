"""Every page of the documentation site in a real browser (headless Chromium from the distribution, driven
by Selenium): the site is built with `mkdocs build --strict`, served over HTTP, and each page of the
navigation must render with its title, heading and navigation, its images loaded, its local links
answered, nothing left unrendered and no error in the browser's console. A screenshot of each page goes to
runs/docs-screenshots/ (VIDIFF_DOCS_SCREENSHOTS=DIR to put them elsewhere).

Run with `make test-browser` (needs the docs extra, chromium and chromium-driver; `.ci/run` installs them)."""

import functools
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest

pytestmark = pytest.mark.browser
webdriver = pytest.importorskip("selenium.webdriver")
pytest.importorskip("mkdocs")
import yaml  # noqa: E402  (PyYAML comes with mkdocs)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SHOTS = Path(os.environ.get("VIDIFF_DOCS_SCREENSHOTS", ROOT / "runs" / "docs-screenshots"))


def nav_pages(entries) -> list:
    """The Markdown files of mkdocs.yml's nav, in order."""
    pages = []
    for entry in entries:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


PAGES = nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])


def page_path(md: str) -> str:
    """docs/training.md is served at training/, findings/index.md at findings/, index.md at /."""
    stem = md[: -len(".md")]
    return "" if stem == "index" else stem[: -len("index")] if stem.endswith("/index") else stem + "/"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("docs") / "site"
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    log = build.stdout + build.stderr
    assert build.returncode == 0 and "WARNING" not in log, log[-3000:]
    return out


@pytest.fixture(scope="module")
def docs_url(site):
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("needs chromium and chromedriver (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ]:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_every_markdown_page_is_in_the_nav():
    files = sorted(str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md"))
    assert files == sorted(PAGES)


def local_links(driver, url: str) -> set:
    hrefs = driver.execute_script("return Array.from(document.querySelectorAll('a[href]'), a => a.href)")
    origin = urlsplit(url).netloc
    return {h.split("#")[0] for h in hrefs if urlsplit(h).netloc == origin}


@pytest.mark.parametrize("md", PAGES)
def test_page_renders_in_chromium(md, docs_url, browser):
    url = urljoin(docs_url, page_path(md))
    browser.get(url)
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SHOTS / (md[: -len(".md")].replace("/", "-") + ".png")))
    assert browser.title.endswith("vidiff") and "404" not in browser.title, browser.title
    heading = browser.find_element(By.CSS_SELECTOR, "article h1").text
    assert heading and "404" not in heading
    nav = browser.find_element(By.CSS_SELECTOR, "nav.md-nav--primary").get_attribute("textContent")
    assert all(name in nav for name in ["Getting started", "Training", "Findings", "Design", "API reference"])
    text = browser.find_element(By.TAG_NAME, "article").text
    assert not re.search(r":::|--8<--|:(func|class|mod|meth):", text), "a directive or a role was left unrendered"
    broken = browser.execute_script(
        "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
    )
    assert not broken, f"images that did not load: {broken}"
    for link in local_links(browser, url):
        with urllib.request.urlopen(link, timeout=10) as answer:
            assert answer.status == 200, link
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
