"""The study page in headless Chromium: two raters run a whole short study by keyboard and click,
the server is killed mid-study and restarted, the page resumes, and responses.jsonl holds every
given answer exactly once. A screenshot of the page is taken and checked (and kept in
$SR3_SCREENSHOT_DIR when that is set)."""

import io
import json
import os
import pathlib
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from sr3_jax.study import make, responses
from tests import study_images, webdriver

BROWSER = webdriver.find_browser()
pytestmark = pytest.mark.skipif(
  BROWSER is None, reason="needs chromium and chromedriver (make test installs them)"
)


def _serve(study, port):
  proc = subprocess.Popen(
    [sys.executable, "-m", "sr3_jax", "study", "serve", str(study), "--port", str(port)],
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )
  deadline = time.time() + 30
  while time.time() < deadline:
    try:
      urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state?rater=a", timeout=2).read()
      return proc
    except OSError:
      time.sleep(0.1)
  proc.kill()
  raise RuntimeError(proc.stdout.read())


def _answer(page, how):
  """Waits for the choice, answers and waits until the answer is taken."""
  trial = page.wait("document.body.dataset.phase === 'choosing' && document.body.dataset.trial")
  before = page.js("return document.body.dataset.answered || '0';")
  {"click-left": lambda: page.click("#choose-left"), "click-right": lambda: page.click("#choose-right"),
   "key-left": lambda: page.key("ArrowLeft"), "key-right": lambda: page.key("j")}[how]()  # fmt: skip
  try:
    page.wait(f"(document.body.dataset.answered || '0') !== '{before}'")
  except TimeoutError:
    state = page.js(
      "return [document.body.dataset.phase, document.body.dataset.trial, document.getElementById('status').textContent, document.activeElement.id, document.getElementById('choose-left').disabled];"
    )
    raise TimeoutError(f"{how} on {trial} not taken: {state}") from None
  return trial


def test_two_raters_with_a_server_crash(tmp_path):
  f = study_images.write(tmp_path / "imgs")
  study = tmp_path / "study"
  make.make(
    f["real"], {"bicubic": f["bicubic"], "noisy": f["noisy"]}, study, task="with-input",
    input_dir=f["lr"], trials_per_rater=4, raters=["a", "b"], checks=1, display_seconds=1.0,
  )  # fmt: skip
  n = 5
  port = webdriver.free_port()
  url = f"http://127.0.0.1:{port}"
  server = _serve(study, port)
  driver = webdriver.Driver(*BROWSER)
  pages = []
  try:
    a, b = driver.session(), driver.session()
    pages = [a, b]
    a.get(url + "/?rater=a")
    b.get(url + "/?rater=b")
    ways = ["click-left", "key-right", "key-left", "click-right", "key-left"]
    _answer(a, ways[0])
    _answer(b, ways[1])
    _answer(a, ways[2])
    a.wait("document.body.dataset.phase === 'showing'")
    shot = a.screenshot()  # the pair and the LR input on screen
    assert a.js("return document.getElementById('progress').textContent;").startswith(
      "Trial 3 of 5"
    )
    # the server dies; rater a answers meanwhile (the page keeps retrying), then it comes back
    server.kill()
    server.wait()
    a.wait("document.body.dataset.phase === 'choosing'")
    a.click("#choose-right")
    a.wait("document.getElementById('status').textContent.startsWith('Saving')")
    server = _serve(study, port)
    a.wait("document.body.dataset.answered === '3'")
    # a reload resumes at the first unanswered trial
    a.get(url + "/?rater=a")
    assert a.wait("document.body.dataset.resumedAt") == "3"
    _answer(a, ways[3])
    _answer(a, ways[4])
    a.wait("document.body.dataset.done === '1'")
    for w in ways[2:] + ways[:1]:
      _answer(b, w)
    b.wait("document.body.dataset.done === '1'")
    # a replayed answer (the same request again) changes nothing
    trial0 = make.load(study)["raters"]["b"][0]["id"]
    req = urllib.request.Request(
      url + "/api/answer",
      data=json.dumps({"rater": "b", "trial": trial0, "choice": "left", "rt_ms": 1}).encode(),
    )
    assert json.loads(urllib.request.urlopen(req).read())["duplicate"] is True
  finally:
    for p in pages:
      p.quit()
    driver.close()
    server.kill()
  recs, bad = responses.read(study / responses.FILE)
  lines = (study / responses.FILE).read_text().splitlines()
  assert bad == 0 and len(lines) == len(recs) == 2 * n
  meta = make.load(study)
  assert sorted((r["rater"], r["trial"]) for r in recs) == sorted(
    (r, t["id"]) for r, ts in meta["raters"].items() for t in ts
  )
  # the choices are the sides clicked or pressed, mapped to what was shown there
  order_a = [r for r in recs if r["rater"] == "a"]
  assert [r["choice"] == r["left"] for r in order_a] == [True, True, False, False, True]
  assert all(r["rt_ms"] >= 1000 for r in recs)  # no answer before the pair was hidden
  # the screenshot shows the page: a grey page with images on it, not a blank or an error
  im = Image.open(io.BytesIO(shot)).convert("RGB")
  assert im.size[0] >= 800 and im.size[1] >= 600
  arr = np.asarray(im, np.float64)
  assert arr.std() > 20 and np.abs(arr[300] - arr[300].mean(0)).sum() > 0
  out = os.environ.get("SR3_SCREENSHOT_DIR")
  if out:
    pathlib.Path(out).mkdir(parents=True, exist_ok=True)
    im.save(pathlib.Path(out) / "study_page.png")
