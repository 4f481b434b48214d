"""A minimal W3C WebDriver client (the HTTP protocol chromedriver speaks), enough to drive the
study page in headless Chromium from the tests without a Selenium dependency."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
KEYS = {"ArrowLeft": "\ue012", "ArrowRight": "\ue014"}


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def find_browser() -> tuple[str, str] | None:
  """(chromedriver, chromium) paths when both are installed."""
  driver = shutil.which("chromedriver")
  browser = (
    shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
  )
  return (driver, browser) if driver and browser else None


class Driver:
  """One chromedriver process; `session()` opens a headless browser window on it."""

  def __init__(self, driver: str, browser: str):
    self.browser = browser
    self.port = free_port()
    self.proc = subprocess.Popen(
      [driver, f"--port={self.port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    self.base = f"http://127.0.0.1:{self.port}"
    deadline = time.time() + 30
    while time.time() < deadline:
      try:
        if self.call("GET", "/status")["ready"]:
          return
      except (urllib.error.URLError, ConnectionError, OSError):
        time.sleep(0.1)
    raise RuntimeError("chromedriver did not start")

  def call(self, method: str, path: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(self.base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    try:
      with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())["value"]
    except urllib.error.HTTPError as e:
      raise RuntimeError(f"webdriver {method} {path}: {e.read()[:500]!r}") from None

  def session(self, width: int = 900, height: int = 820) -> "Session":
    args = ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
            f"--window-size={width},{height}"]  # fmt: skip
    caps = {"browserName": "chrome", "goog:chromeOptions": {"binary": self.browser, "args": args}}
    value = self.call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})
    return Session(self, value["sessionId"])

  def close(self) -> None:
    self.proc.terminate()
    try:
      self.proc.wait(10)
    except subprocess.TimeoutExpired:
      self.proc.kill()


class Session:
  def __init__(self, driver: Driver, sid: str):
    self.d, self.sid = driver, sid

  def _c(self, method, path, body=None):
    return self.d.call(method, f"/session/{self.sid}{path}", body)

  def get(self, url: str) -> None:
    self._c("POST", "/url", {"url": url})

  def js(self, script: str, *args):
    return self._c("POST", "/execute/sync", {"script": script, "args": list(args)})

  def click(self, css: str) -> None:
    el = self._c("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]
    self._c("POST", f"/element/{el}/click", {})

  def key(self, name: str) -> None:
    k = KEYS.get(name, name)
    acts = [{"type": "keyDown", "value": k}, {"type": "keyUp", "value": k}]
    self._c("POST", "/actions", {"actions": [{"type": "key", "id": "kb", "actions": acts}]})

  def wait(self, script: str, timeout: float = 20.0):
    """Polls `script` (a JS expression) until it is truthy; returns its value."""
    deadline = time.time() + timeout
    while True:
      v = self.js(f"return {script};")
      if v:
        return v
      if time.time() > deadline:
        raise TimeoutError(f"waited {timeout} s for {script}")
      time.sleep(0.05)

  def screenshot(self) -> bytes:
    return base64.b64decode(self._c("GET", "/screenshot"))

  def quit(self) -> None:
    self._c("DELETE", "")
