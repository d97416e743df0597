"""Regenerate a run's report.html and photograph it in headless Chromium: the picture in the README.

    python scripts/report_screenshot.py RUN_FOLDER [--out docs/report.png] [--width 1100] [--max-height 1500]

Needs Chromium and chromedriver from the distribution (`make install` adds them where it can) and Selenium
(the dev extra). The PNG is reduced to a 256-colour palette so it stays small enough to commit.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> tuple[str, str] | None:
    """(browser, chromedriver) paths on this machine, or None when either is missing."""
    browser = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def headless_chromium(browser: str, driver: str, width: int = 1100, height: int = 900):
    """A Selenium driver for the given Chromium and chromedriver (never one fetched from the network), with
    the browser's console log kept for reading."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--window-size={width},{height}", "--hide-scrollbars"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


def screenshot(run_dir: Path, out: Path, width: int, max_height: int) -> Path:
    """Write the report again, open it, and save its top `max_height` pixels as a palette PNG at `out`."""
    from PIL import Image

    from train.report import write_report

    found = find_chromium()
    if found is None:
        raise SystemExit("error: no chromium and chromedriver here (`make install` installs them as root)")
    page = write_report(run_dir.resolve())
    driver = headless_chromium(*found, width=width)
    try:
        driver.get(page.as_uri())
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, min(height, max_height))
        raw = out.with_suffix(".raw.png")
        driver.save_screenshot(str(raw))
    finally:
        driver.quit()
    with Image.open(raw) as picture:
        picture.convert("RGB").quantize(colors=256).save(out, optimize=True)
    raw.unlink()
    return out


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run folder (outputs/<date>/<time>_<name>)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "report.png")
    parser.add_argument("--width", type=int, default=1100, help="browser window width, px")
    parser.add_argument("--max-height", type=int, default=1500, help="the picture's height at most, px")
    args = parser.parse_args(argv)
    if not args.run_dir.is_dir():
        raise SystemExit(f"error: {args.run_dir}: no such folder")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    path = screenshot(args.run_dir, args.out, args.width, args.max_height)
    print(f"{path} ({path.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main(sys.argv[1:])
