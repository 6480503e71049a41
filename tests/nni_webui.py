"""Headless-browser checks of a running NNI 3.0 web UI (selenium + chromium), for tests.

NNI 3.0's trial table (``/detail``) shows only Trial No., ID, Duration, Status and "Default metric" by default.
Each key of a dict final metric other than ``default`` is a hidden column titled ``"<key> (metric)"`` (column key
``metric/<key>``) that has to be ticked in the "Add/Remove columns" dialog; ``default`` itself is the
"Default metric" column. The overview page and the expanded trial row show no metric keys.
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

METRIC_SUFFIX = ' (metric)'
DEFAULT_METRIC_HEADER = 'Default metric'

# Debian's /usr/bin/chromium is a shell wrapper; the binary behind it starts without the wrapper's shell noise.
_CHROMIUM_CANDIDATES = ('/usr/lib/chromium/chromium', 'chromium', 'chromium-browser', 'google-chrome',
                        'google-chrome-stable')
_DRIVER_CANDIDATES = ('chromedriver', '/usr/lib/chromium/chromedriver')

# Read in one script call: the UI re-renders on its refresh timer, which makes element handles go stale.
_READ_TABLE_JS = """
const root = document.querySelector('#tableList');
if (!root) { return null; }
const headers = Array.from(root.querySelectorAll('[role=columnheader][data-item-key]')).map(
    e => [e.getAttribute('data-item-key'), e.textContent.trim()]);
const rows = Array.from(root.querySelectorAll('.ms-DetailsRow')).map(r => Array.from(
    r.querySelectorAll('[role=gridcell][data-automation-key]')).map(
        c => [c.getAttribute('data-automation-key'), c.innerText.trim()]));
return {headers: headers, rows: rows};
"""
_DIALOG_CHECKBOXES_JS = """
const dialog = document.querySelector('[role=dialog]');
if (!dialog) { return null; }
return Array.from(dialog.querySelectorAll('.ms-Checkbox')).map(box => [
    box.querySelector('.ms-Checkbox-text').textContent.trim(), box.querySelector('input').checked]);
"""


@dataclass
class TrialTable:
    """What the trial table showed: column key -> header title, and the visible rows (first page only)."""
    headers: dict[str, str]
    rows: list[dict[str, str]] = field(default_factory=list)

    @property
    def metric_keys(self) -> set[str]:
        """Dict-metric keys that have a "<key> (metric)" column (``default`` is the "Default metric" column)."""
        return {title[:-len(METRIC_SUFFIX)] for title in self.headers.values() if title.endswith(METRIC_SUFFIX)}

    def column(self, title: str) -> list[str]:
        """Cell texts of the column with this header title, one per visible row."""
        keys = [key for key, t in self.headers.items() if t == title]
        if not keys:
            raise KeyError(f'no column titled {title!r}; columns: {list(self.headers.values())}')
        return [row.get(keys[0], '') for row in self.rows]


def _which(name: str) -> str | None:
    if os.path.isabs(name):
        return name if os.path.isfile(name) and os.access(name, os.X_OK) else None
    return shutil.which(name)


def _first_executable(env_var: str, candidates: tuple[str, ...]) -> str | None:
    override = os.environ.get(env_var)
    return next((path for path in map(_which, (override,) if override else candidates) if path), None)


def find_chromium() -> tuple[str, str] | None:
    """(chromium binary, chromedriver) paths, or None when either is missing.

    NNI_BIGLITTLE_CHROMIUM and NNI_BIGLITTLE_CHROMEDRIVER, when set, replace the search.
    """
    binary = _first_executable('NNI_BIGLITTLE_CHROMIUM', _CHROMIUM_CANDIDATES)
    driver = _first_executable('NNI_BIGLITTLE_CHROMEDRIVER', _DRIVER_CANDIDATES)
    return (binary, driver) if binary and driver else None


def unavailable_reason() -> str | None:
    """Why the web-UI check cannot run here (for pytest.skip), or None when it can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return 'selenium is not installed (pip install selenium)'
    if find_chromium() is None:
        return ('chromium and chromedriver not found '
                '(apt-get install chromium chromium-driver, or set NNI_BIGLITTLE_CHROMIUM/NNI_BIGLITTLE_CHROMEDRIVER)')
    return None


def _detail_url(url: str) -> str:
    parts = urlsplit(url if '://' in url else f'http://{url}')
    return f'{parts.scheme}://{parts.netloc}/detail'


def _click(wait, xpath: str) -> None:
    """Click the element at ``xpath`` once it exists, is enabled and takes the click (dialogs animate in)."""
    from selenium.webdriver.common.by import By

    def attempt(browser) -> bool:
        element = browser.find_element(By.XPATH, xpath)
        if not element.is_enabled():
            return False
        element.click()
        return True

    wait.until(attempt)


def _start_driver(window: tuple[int, int]):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = find_chromium()
    if found is None:
        raise RuntimeError(unavailable_reason() or 'chromium not found')
    binary, driver = found
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    # --no-sandbox: tests may run as root; --disable-dev-shm-usage: containers often have a tiny /dev/shm.
    for arg in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu',
                '--disable-extensions', '--no-first-run', f'--window-size={window[0]},{window[1]}'):
        options.add_argument(arg)
    # An explicit driver path keeps Selenium Manager from trying to download one.
    return webdriver.Chrome(service=Service(driver), options=options)


def _clean(text: str) -> str:
    # Fluent UI icons are private-use glyphs (and render as boxes when the icon font CDN is unreachable).
    return re.sub(r'[\ue000-\uf8ff]', '', text).strip()


def _read_table(browser) -> TrialTable | None:
    raw = browser.execute_script(_READ_TABLE_JS)
    if not raw or not raw['rows']:
        return None
    return TrialTable(headers={key: _clean(title) for key, title in raw['headers']},
                      rows=[{key: _clean(text) for key, text in row} for row in raw['rows']])


def read_trial_table(url: str, screenshot: str | Path, timeout: float = 60,
                     window: tuple[int, int] = (2400, 1200)) -> TrialTable:
    """Open the trial table of the NNI web UI at ``url``, show every metric column, screenshot it, read it.

    ``url`` is the web UI's address (any path; ``/detail`` is opened). The table needs at least one trial row.
    Metric columns are ticked in the "Add/Remove columns" dialog (a fresh browser profile starts with the defaults).
    The screenshot is taken after the columns are shown, and also when reading fails (to help debugging).
    """
    from selenium.common.exceptions import (ElementClickInterceptedException, ElementNotInteractableException,
                                            NoSuchElementException, StaleElementReferenceException,
                                            TimeoutException)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    screenshot = Path(screenshot)
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    browser = _start_driver(window)
    try:
        wait = WebDriverWait(browser, timeout, poll_frequency=0.25, ignored_exceptions=(
            NoSuchElementException, StaleElementReferenceException, ElementClickInterceptedException,
            ElementNotInteractableException))
        browser.get(_detail_url(url))
        try:
            wait.until(lambda b: _read_table(b))
        except TimeoutException:
            raise TimeoutException(f'no trial rows in the web UI trial table at {_detail_url(url)} '
                                   f'after {timeout}s') from None
        _click(wait, "//div[@id='tableList']//button[.//span[normalize-space()='Add/Remove columns']]")
        boxes = wait.until(lambda b: b.execute_script(_DIALOG_CHECKBOXES_JS))
        to_tick = [label for label, checked in boxes if label.endswith(METRIC_SUFFIX) and not checked]
        for label in to_tick:
            # The <input> is visually hidden by Fluent UI; its label takes the click.
            _click(wait, f"//div[@role='dialog']//label[.//span[normalize-space()='{label}']]")
        wait.until(lambda b: all(checked for label, checked in b.execute_script(_DIALOG_CHECKBOXES_JS)
                                 if label in to_tick))
        _click(wait, f"//div[@role='dialog']//button[.//span[normalize-space()='{'Save' if to_tick else 'Cancel'}']]")
        wait.until(lambda b: not b.find_elements(By.CSS_SELECTOR, '[role=dialog]'))
        table = wait.until(lambda b: (t := _read_table(b)) is not None
                           and set(to_tick) <= set(t.headers.values()) and t)
        # Grow the window to the whole page so that a long table is in the screenshot too.
        height = browser.execute_script('return document.documentElement.scrollHeight')
        if height > window[1]:
            browser.set_window_size(window[0], height + 200)
        browser.save_screenshot(str(screenshot))
        return table
    except BaseException:
        try:
            browser.save_screenshot(str(screenshot))
        except Exception:  # noqa: BLE001  (the original error matters more)
            pass
        raise
    finally:
        browser.quit()


def trial_table_metric_keys(url: str, screenshot: str | Path, timeout: float = 60) -> set[str]:
    """Dict-metric keys read from the web UI trial table's "<key> (metric)" column headers (``default`` excluded)."""
    return read_trial_table(url, screenshot, timeout).metric_keys
