"""Make docs/chat.png, the README's picture of the chat demo: two members talking, seen by one.

    python3 -m tests.chat_screenshot [--out docs/chat.png] [--stack stdlib]

from the top folder of a checkout. It runs the demo app on a free port of 127.0.0.1 and
three headless Debian Chromium sessions (tests/browser_setup.md: the same browser, driver
and options as tests/test_chat_browser.py, whose helpers it uses); ann, bob and carol
join, talk, and carol leaves; the picture is bob's page.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.test_chat_browser import (
    CHROMEDRIVER,
    ROOT,
    WAIT,
    App,
    chromium_options,
    free_port,
    join,
    open_chat,
    say,
    wait_line,
    wait_text,
)

WIDTH, HEIGHT = 760, 510  # the page's viewport, in CSS pixels


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "chat.png"))
    parser.add_argument("--stack", default="stdlib", choices=["stdlib", "cherrypy", "gevent", "asgi"])
    args = parser.parse_args(argv)
    app = App(args.stack, free_port())
    drivers: list[webdriver.Chrome] = []
    try:
        url = app.url()
        with tempfile.TemporaryDirectory() as profiles:
            for name in ("ann", "bob", "carol"):
                options = chromium_options(os.path.join(profiles, name))
                options.add_argument("--force-device-scale-factor=1")
                driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
                driver.set_page_load_timeout(WAIT)
                drivers.append(driver)
            ann, bob, carol = drivers
            for driver in drivers:
                open_chat(driver, url)
            join(ann, "ann")
            wait_text(ann, "online", "ann", "ann is in")
            join(bob, "bob")
            wait_text(ann, "online", "ann, bob", "bob is in")
            join(carol, "carol")
            wait_line(bob, "carol joined", "carol is in")
            say(ann, "hi bob! this page talks to the server over one WebSocket")
            wait_line(bob, "ann: hi bob! this page talks to the server over one WebSocket", "ann's line")
            say(bob, "and if the server restarts, it reconnects by itself")
            wait_line(ann, "bob: and if the server restarts, it reconnects by itself", "bob's line")
            say(carol, "got to go, bye!")
            wait_line(bob, "carol: got to go, bye!", "carol's line")
            carol.quit()
            drivers.remove(carol)
            wait_line(bob, "carol left", "carol is gone")
            wait_text(bob, "online", "ann, bob", "carol is gone from the list")
            bob.execute_script("document.getElementById('text').blur(); window.scrollTo(0, 0)")  # no caret
            # The window's size less what the browser keeps for itself is the viewport: ask for the difference.
            bob.set_window_size(WIDTH, HEIGHT)
            inner = bob.execute_script("return [window.innerWidth, window.innerHeight]")
            bob.set_window_size(2 * WIDTH - inner[0], 2 * HEIGHT - inner[1])
            bob.save_screenshot(args.out)
    finally:
        for driver in drivers:
            driver.quit()
        app.stop()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
