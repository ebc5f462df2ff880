"""Open a page in real headless Chromium through the DevTools protocol and report what a visitor would meet.

    python tests/browser.py PAGE.html SCREENSHOT.png     prints the check as JSON; exit 1 on any problem

`check_page` starts Chromium with a fresh profile, loads the page from a
file:// URL, waits for its load event, then runs CHECK_SCRIPT in the page: every
<audio> source is fetched and decoded with the Web Audio API
(decodeAudioData) and loaded by its element (loadedmetadata, duration > 0),
and every <img> is asked for its naturalWidth. It collects console errors,
uncaught exceptions, log errors (a missing file shows up there) and the URL
of every request, and saves a full-page screenshot.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync")
# file:// pages may read files beside them only with this flag (the check's XMLHttpRequest needs it)
EXTRA_FLAGS = ("--allow-file-access-from-files", "--remote-debugging-port=0", "--window-size=1280,900",
               "--autoplay-policy=no-user-gesture-required", "--mute-audio")

CHECK_SCRIPT = """
(async () => {
  const decode = (url) => new Promise((resolve) => {
    const request = new XMLHttpRequest();
    request.open('GET', url);
    request.responseType = 'arraybuffer';
    request.onload = async () => {
      try {
        const buffer = await new OfflineAudioContext(1, 1, 44100).decodeAudioData(request.response);
        resolve({ok: buffer.duration > 0, duration: buffer.duration});
      } catch (error) { resolve({ok: false, error: String(error)}); }
    };
    request.onerror = () => resolve({ok: false, error: 'cannot read the file'});
    request.send();
  });
  const element = (audio) => new Promise((resolve) => {
    const done = () => resolve({ok: audio.duration > 0, duration: audio.duration});
    if (audio.readyState >= 1) { done(); return; }
    audio.addEventListener('loadedmetadata', done, {once: true});
    audio.addEventListener('error', () => resolve({ok: false, error: 'media error ' + audio.error.code}),
                           {once: true});
    audio.preload = 'auto';
    audio.load();
  });
  const audio = [];
  for (const node of document.querySelectorAll('audio')) {
    const src = node.currentSrc || node.src;
    audio.push({src, decoded: await decode(src), element: await element(node)});
  }
  const images = [...document.images].map((image) => ({src: image.currentSrc || image.src,
    complete: image.complete, naturalWidth: image.naturalWidth}));
  return {audio, images, title: document.title};
})()
"""


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@dataclass
class PageCheck:
    audio: list[dict]
    images: list[dict]
    title: str
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, log errors
    requests: list[str] = field(default_factory=list)  # URL of every request the page made

    def problems(self) -> list[str]:
        found = [f"audio {a['src']}: {a}" for a in self.audio if not (a["decoded"]["ok"] and a["element"]["ok"])]
        found += [f"image {i['src']} did not load" for i in self.images if not (i["complete"] and i["naturalWidth"])]
        found += [f"request off the page's folder: {url}" for url in self.requests
                  if not url.startswith(("file://", "data:"))]
        return found + [f"console: {e}" for e in self.errors]


class DevTools:
    """A minimal DevTools protocol client on one page target: commands wait for their answer, events are kept."""

    def __init__(self, url: str, timeout: float):
        import websocket

        # Chromium refuses websocket clients that send an Origin it does not allow
        self.socket = websocket.create_connection(url, timeout=timeout, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, **params) -> dict:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            if "method" in message:
                self.events.append(message)

    def wait_for(self, event: str, timeout: float) -> None:
        end = time.monotonic() + timeout
        while not any(e["method"] == event for e in self.events):
            if time.monotonic() > end:
                raise TimeoutError(f"no {event} within {timeout} s")
            message = json.loads(self.socket.recv())
            if "method" in message:
                self.events.append(message)

    def close(self) -> None:
        self.socket.close()


def _errors(events: list[dict]) -> list[str]:
    errors = []
    for event in events:
        params = event.get("params", {})
        if event["method"] == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif event["method"] == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            errors.append(details.get("exception", {}).get("description") or details.get("text", "exception"))
        elif event["method"] == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            errors.append(f"{entry.get('text')} ({entry.get('url', '')})")
    return errors


def check_page(page: Path, screenshot: Path, timeout: float = 60.0) -> PageCheck:
    """Load ``page`` in headless Chromium, run CHECK_SCRIPT, save a full-page PNG to ``screenshot``."""
    binary = chromium_binary()
    if binary is None:
        raise FileNotFoundError("no chromium binary on PATH")
    with tempfile.TemporaryDirectory(prefix="tsekit-chromium-") as profile:
        process = subprocess.Popen([binary, *FLAGS, *EXTRA_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            end = time.monotonic() + timeout
            while not (port_file.is_file() and len(port_file.read_text().splitlines()) >= 2):
                if process.poll() is not None or time.monotonic() > end:
                    raise RuntimeError(f"{binary} did not start its DevTools server (exit {process.poll()})")
                time.sleep(0.1)
            port = port_file.read_text().splitlines()[0]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout) as answer:
                targets = json.load(answer)
            target = next(t for t in targets if t["type"] == "page")
            tools = DevTools(target["webSocketDebuggerUrl"], timeout)
            try:
                for domain in ("Page", "Runtime", "Log", "Network"):
                    tools.send(f"{domain}.enable")
                tools.send("Page.navigate", url=page.resolve().as_uri())
                tools.wait_for("Page.loadEventFired", timeout)
                result = tools.send("Runtime.evaluate", expression=CHECK_SCRIPT, awaitPromise=True,
                                    returnByValue=True)
                if "exceptionDetails" in result:
                    raise RuntimeError(f"the check script failed: {result['exceptionDetails']}")
                value = result["result"]["value"]
                size = tools.send("Page.getLayoutMetrics")["cssContentSize"]
                shot = tools.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                                  clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
                screenshot.write_bytes(base64.b64decode(shot["data"]))
                requests = [e["params"]["request"]["url"] for e in tools.events
                            if e["method"] == "Network.requestWillBeSent"]
                return PageCheck(value["audio"], value["images"], value["title"], _errors(tools.events), requests)
            finally:
                tools.close()
        finally:
            os.killpg(process.pid, signal.SIGTERM)  # the group of the browser this function started
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


if __name__ == "__main__":
    checked = check_page(Path(sys.argv[1]), Path(sys.argv[2]))
    print(json.dumps({"audio": len(checked.audio), "images": len(checked.images), "requests": len(checked.requests),
                      "problems": checked.problems()}, indent=1))
    sys.exit(1 if checked.problems() else 0)
