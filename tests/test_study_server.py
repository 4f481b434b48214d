"""`sr3 study serve` over HTTP: answers recorded once each and synced, replays ignored and logged,
only the study's images served, several raters at once, and a crash's cut line sealed off."""

import concurrent.futures
import json
import threading
import urllib.error
import urllib.request

import pytest

from sr3_jax.study import make, responses, server
from tests import study_images


@pytest.fixture()
def study(tmp_path):
  f = study_images.write(tmp_path / "imgs")
  make.make(
    f["real"],
    {"bicubic": f["bicubic"], "noisy": f["noisy"]},
    tmp_path / "study",
    task="with-input",
    input_dir=f["lr"],
    trials_per_rater=6,
    raters=["a", "b", "c", "d"],
  )
  return tmp_path / "study"


def _start(folder):
  box = {}
  ready = threading.Event()

  def on_ready(httpd):
    box["httpd"] = httpd
    ready.set()

  t = threading.Thread(
    target=server.serve,
    args=(folder,),
    kwargs=dict(port=0, out=open("/dev/null", "w"), ready=on_ready),
    daemon=True,
  )
  t.start()
  assert ready.wait(10)
  httpd = box["httpd"]
  return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def _get(url):
  try:
    with urllib.request.urlopen(url, timeout=10) as r:
      return r.status, r.read(), r.headers.get("Content-Type")
  except urllib.error.HTTPError as e:
    return e.code, e.read(), e.headers.get("Content-Type")


def _post(base, body):
  data = body if isinstance(body, bytes) else json.dumps(body).encode()
  req = urllib.request.Request(
    base + "/api/answer", data=data, headers={"Content-Type": "application/json"}
  )
  try:
    with urllib.request.urlopen(req, timeout=10) as r:
      return r.status, json.loads(r.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


def test_answers_are_recorded_once(study):
  httpd, base = _start(study)
  try:
    status, body, ctype = _get(base + "/?rater=a")
    assert status == 200 and b"study.js" in body and ctype.startswith("text/html")
    st = json.loads(_get(base + "/api/state?rater=a")[1])
    assert st["task"] == "with-input" and st["answered"] == [] and len(st["trials"]) == 6 + 1
    t0 = st["trials"][0]
    # image addresses are opaque: nothing the page gets says which image is the real one
    assert "real" not in json.dumps(st) and "noisy" not in json.dumps(st)
    status, img, ctype = _get(base + t0["left"])
    assert status == 200 and ctype == "image/png" and img[:4] == b"\x89PNG"
    first = make.load(study)["raters"]["a"][0]
    assert img == (study / make.image_path(first["left"], first["name"])).read_bytes()
    assert _get(base + t0["input"])[0] == 200
    assert _post(base, {"rater": "a", "trial": t0["id"], "choice": "left", "rt_ms": 812.4}) == (
      200, {"ok": True, "duplicate": False, "answered": 1},
    )  # fmt: skip
    # a replay (double click, resent request) is ignored and logged
    code, reply = _post(base, {"rater": "a", "trial": t0["id"], "choice": "right", "rt_ms": 900})
    assert code == 200 and reply["duplicate"] is True
    assert (
      "ignored a second answer: rater=a trial=" + t0["id"] in (study / "server.log").read_text()
    )
    assert json.loads(_get(base + "/api/state?rater=a")[1])["answered"] == [t0["id"]]
    # invalid answers are refused with a reason
    for bad, why in [
      ({"rater": "zz", "trial": "t000", "choice": "left", "rt_ms": 1}, "unknown rater"),
      ({"rater": "a", "trial": "t999", "choice": "left", "rt_ms": 1}, "has no trial"),
      ({"rater": "a", "trial": "t001", "choice": "up", "rt_ms": 1}, "choice must be"),
      ({"rater": "a", "trial": "t001", "choice": "left", "rt_ms": "fast"}, "rt_ms must be"),
      (b"[1, 2", "not a JSON object"),
    ]:
      code, reply = _post(base, bad)
      assert code == 400 and why in reply["error"]
    assert _get(base + "/api/state?rater=nobody")[0] == 404
  finally:
    httpd.shutdown()
  recs, bad = responses.read(study / responses.FILE)
  assert bad == 0 and len(recs) == 1
  rec = recs[0]
  trial = next(
    t for t in json.loads((study / "study.json").read_text())["raters"]["a"] if t["id"] == t0["id"]
  )
  assert rec["choice"] == trial["left"] and rec["rt_ms"] == 812.4 and rec["name"] == trial["name"]
  assert len((study / responses.FILE).read_text().splitlines()) == 1


@pytest.mark.parametrize(
  "path",
  [
    "/study.json",
    "/images/../study.json",
    "/images/real/../../study.json",
    "/images/%2e%2e/study.json",
    "/images/real/%2e%2e%2f%2e%2e%2fstudy.json",
    "/static/../study.json",
    "/static/%2e%2e%2fserver.py",
    "/static/../server.py",
    "/responses.jsonl",
    "/images/real/../../../../etc/passwd",
    "/images/real/astronaut.png",
    "/img/a/t000/../../../study.json",
    "/img/a/t000/middle",
    "/img/zz/t000/left",
  ],
)
def test_nothing_outside_the_study_images_is_served(study, path):
  (study / responses.FILE).write_text("secret\n")
  httpd, base = _start(study)
  try:
    status, body, _ = _get(base + path)
  finally:
    httpd.shutdown()
  assert status == 404 and b"secret" not in body and b"raters" not in body


def test_many_raters_at_once(study):
  httpd, base = _start(study)
  meta = make.load(study)
  jobs = [(r, t["id"]) for r, ts in meta["raters"].items() for t in ts]
  try:
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
      # every answer sent twice, concurrently: each must be kept exactly once
      results = list(
        pool.map(
          lambda j: _post(base, {"rater": j[0], "trial": j[1], "choice": "left", "rt_ms": 5}),
          jobs * 2,
        )
      )
  finally:
    httpd.shutdown()
  assert all(code == 200 for code, _ in results)
  assert sum(not r["duplicate"] for _, r in results) == len(jobs)
  recs, bad = responses.read(study / responses.FILE)
  lines = (study / responses.FILE).read_text().splitlines()
  assert bad == 0 and len(lines) == len(jobs) == len(recs)
  assert sorted((r["rater"], r["trial"]) for r in recs) == sorted(jobs)


def test_a_cut_last_line_is_sealed_and_skipped(study):
  path = study / responses.FILE
  responses.append(
    path,
    dict(
      rater="a",
      trial="t000",
      name="x",
      kind="fool",
      left="real",
      right="noisy",
      choice="real",
      rt_ms=1.0,
      time="T",
    ),
  )
  with open(path, "a") as f:
    f.write('{"rater": "a", "trial": "t001", "cho')  # the server died mid-write
  httpd, base = _start(study)
  try:
    st = json.loads(_get(base + "/api/state?rater=a")[1])
    assert st["answered"] == ["t000"]
    assert _post(base, {"rater": "a", "trial": "t001", "choice": "left", "rt_ms": 3})[0] == 200
  finally:
    httpd.shutdown()
  recs, bad = responses.read(path)
  assert bad == 1 and [r["trial"] for r in recs] == ["t000", "t001"]
