"""The search page in a real headless chromium: a text query shows images; a box query shows regions.

The first test drives the page through its URL hash (``#text=...`` / ``#image_id=N&box=...&regions=1``)
and reads the DOM once the page says its query is done; the second drives it like a person over the
DevTools protocol: a file uploaded through the file input, a box dragged with the mouse, the regions
box ticked, Search clicked.
Without chromium the tests skip, except under CI=true where they fail.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed")
    return exe


def rendered_dom(url: str, profile) -> str:
    """The page's DOM once its query has finished (``data-done`` set on the body). Waiting on the
    page itself, not on a virtual-time budget (``--dump-dom``), keeps a slow machine from reading
    the DOM before the search has answered."""
    browser = DevTools(profile)
    try:
        browser.open(url)
        browser.wait_for("document.body.dataset.done")
        return browser.js("document.documentElement.outerHTML")
    finally:
        browser.close()


def test_text_query_shows_images_and_box_query_shows_regions(running, tmp_path):
    dom = rendered_dom(running.url + "/#text=a%20dog", tmp_path / "text")
    assert 'data-done="1"' in dom, dom[-3000:]
    assert len(re.findall(r'class="hit"', dom)) >= 3
    assert re.search(r'<img src="/v1/image/photos/\d+"', dom)
    assert "heat" in dom  # heatmap overlays drawn

    dom = rendered_dom(running.url + "/#image_id=0&box=0,0,30,30&regions=1", tmp_path / "box")
    assert 'data-done="1"' in dom, dom[-3000:]
    assert "box 0,0,30,30" in dom  # the box drawn on the query image
    regions = re.findall(r'class="region" data-row="\d+" data-col="\d+"', dom)
    assert len(regions) >= 3, dom[-3000:]
    assert "box regions" in dom


class DevTools:
    """Chromium driven over ``--remote-debugging-pipe`` (NUL-separated JSON on fds 3 and 4): real file
    uploads and mouse events, with no extra package."""

    def __init__(self, tmp_path):
        import fcntl

        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # park the child's ends above 9 first, so wiring them to 3 and 4 cannot overwrite one another
        child_in = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_out = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_browser_r)
        os.close(from_browser_w)

        def wire():  # in the child: fd 3 reads our commands, fd 4 writes the answers (dup2 clears CLOEXEC)
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)

        # close_fds would close 3 and 4 again after wire(); every other descriptor here is close-on-exec
        self.proc = subprocess.Popen(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--remote-debugging-pipe",
             f"--user-data-dir={tmp_path / 'devtools-profile'}", "about:blank"],
            close_fds=False, preexec_fn=wire, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(child_in)
        os.close(child_out)
        self._buffer = b""
        self._next = 0
        self.session = None

    def send(self, method: str, timeout: float = 60, **params):
        """One DevTools command (to the attached page once there is one); its result."""
        import json
        import select
        import time

        self._next += 1
        message = {"id": self._next, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                answer = json.loads(raw)
                if answer.get("id") == self._next:
                    assert "error" not in answer, (method, answer["error"])
                    return answer["result"]
            left = deadline - time.monotonic()
            assert left > 0, f"chromium did not answer {method}"
            if select.select([self._from_browser], [], [], left)[0]:
                chunk = os.read(self._from_browser, 1 << 20)
                assert chunk, "chromium closed the DevTools pipe"
                self._buffer += chunk

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", url=url)["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def js(self, expression: str):
        """The value of a JavaScript expression in the page (awaiting promises)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 90):
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # a page still loading may not have the elements yet
            value = self.js(f"(() => {{ try {{ return {expression}; }} catch (e) {{ return false; }} }})()")
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"page never satisfied {expression}")

    def mouse(self, kind: str, x: float, y: float) -> None:
        self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", buttons=1 if kind != "mouseReleased" else 0,
                  clickCount=1)

    def click(self, selector: str) -> None:
        """A real left click in the middle of the element."""
        r = self.js(f"(() => {{ const r = document.querySelector({selector!r}).getBoundingClientRect(); "
                    "return [r.left + r.width / 2, r.top + r.height / 2]; })()")
        self.mouse("mousePressed", *r)
        self.mouse("mouseReleased", *r)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(30)
        os.close(self._to_browser)
        os.close(self._from_browser)


def test_uploaded_image_with_a_drawn_box_shows_regions(running, serve_images, tmp_path):
    """Upload through the file input, drag a box on the query canvas with the mouse, tick regions,
    click Search: region results appear, the same ones the API answers for that image and box."""
    import base64
    import json
    import urllib.request

    image = sorted(serve_images.iterdir())[5]
    browser = DevTools(tmp_path)
    try:
        browser.open(running.url + "/")
        browser.wait_for("document.getElementById('index').options.length > 0")
        root = browser.send("DOM.getDocument")["root"]["nodeId"]
        node = browser.send("DOM.querySelector", nodeId=root, selector="#file")["nodeId"]
        browser.send("DOM.setFileInputFiles", nodeId=node, files=[str(image)])
        browser.wait_for("document.getElementById('qcanvas').width > 0")
        left, top, width, height = browser.js(
            "(() => { const r = document.getElementById('qcanvas').getBoundingClientRect(); "
            "return [r.left, r.top, r.width, r.height]; })()")
        browser.mouse("mousePressed", left + width * 0.1, top + height * 0.2)
        browser.mouse("mouseMoved", left + width * 0.3, top + height * 0.4)
        browser.mouse("mouseReleased", left + width * 0.5, top + height * 0.6)
        box = browser.js("queryBox")
        assert box is not None and len(box) == 4
        natural = browser.js("[document.getElementById('qcanvas').width, document.getElementById('qcanvas').height]")
        assert abs(box[0] - 0.1 * natural[0]) < 2 and abs(box[3] - 0.6 * natural[1]) < 2, (box, natural)
        assert browser.js("document.getElementById('boxlabel').textContent").startswith("box ")
        browser.click("#regions")
        assert browser.js("document.getElementById('regions').checked") is True
        browser.click("#go")
        browser.wait_for("document.body.dataset.done")
        assert browser.js("document.body.dataset.done") == "1", browser.js("document.getElementById('status').textContent")
        shown = browser.js("[...document.querySelectorAll('.hit')].map((h) => [Number(h.dataset.id), "
                           "h.querySelector('.region').dataset.row, h.querySelector('.region').dataset.col])")
        status = browser.js("document.getElementById('status').textContent")
    finally:
        browser.close()
    assert "box regions" in status and len(shown) >= 3
    body = {"image": base64.b64encode(image.read_bytes()).decode(), "box": box, "regions": True, "k": 12}
    req = urllib.request.Request(running.url + "/v1/search", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        want = json.loads(resp.read())["queries"][0]["results"]
    assert shown == [[h["id"], str(h["region"]["row"]), str(h["region"]["col"])] for h in want]
