#!/bin/sh
# Chromium and chromedriver from the distribution's packages, for the test that opens report.html in a real
# headless browser (tests/test_tracked_run.py). Quick when they are there; never fails `make install`:
# where they cannot be installed it says so in one line and the test skips, naming the reason.
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome)
if [ -n "$browser" ] && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "chromium/chromedriver missing (installing them needs root and apt-get): the report's browser test will skip"
    exit 0
fi
echo "installing chromium and chromium-driver for the report's browser test"
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }; then
    echo "could not install chromium and chromium-driver: the report's browser test will skip"
fi
exit 0
