"""`sr3 study serve`: the study's page, its images and an answer endpoint, on the standard
library's threading HTTP server.

GET  /?rater=ID            the page (static/index.html), which runs the rater's trials
GET  /static/<file>        the page's script and style sheet
GET  /api/state?rater=ID   the rater's trials and which are answered (a reload resumes there)
GET  /img/<rater>/<trial>/<side>   a trial's left, right or input image, by an opaque address
                           (the URL never tells which image is the real one)
POST /api/answer           {"rater", "trial", "choice": "left"|"right", "rt_ms"}

Every accepted answer is appended to STUDY/responses.jsonl and synced before the reply. A second
answer to a trial (a replay, a double click, a resent request) is ignored and logged to
STUDY/server.log. The server binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import datetime
import http.server
import json
import pathlib
import sys
import threading
import urllib.parse

from sr3_jax.study import make, responses

STATIC = pathlib.Path(__file__).with_name("static")
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css"}
MAX_BODY = 4096


class Study:
  """A study's trials and the answers given so far, shared by the server's threads."""

  def __init__(self, folder):
    self.folder = pathlib.Path(folder)
    self.meta = make.load(self.folder)
    self.trials = {r: {t["id"]: t for t in ts} for r, ts in self.meta["raters"].items()}
    self.images = {}  # /img/RATER/TRIAL/SIDE → file, for exactly the images the study shows
    for rater, ts in self.meta["raters"].items():
      for t in ts:
        sides = {"left": t["left"], "right": t["right"]}
        if self.meta["task"] == "with-input":
          sides["input"] = make.INPUT
        for side, cond in sides.items():
          path = self.folder / make.image_path(cond, t["name"])
          self.images[f"/img/{rater}/{t['id']}/{side}"] = path
    missing = [str(p) for p in self.images.values() if not p.is_file()]
    if missing:
      raise make.StudyError(
        f"{self.folder}: {len(missing)} study images are missing (e.g. {missing[0]}); "
        "remake the study with sr3 study make"
      )
    self.path = self.folder / responses.FILE
    responses.seal(self.path)
    given, self.malformed = responses.read(self.path)
    self.answered = {r: set() for r in self.trials}
    for rec in given:
      if rec["rater"] in self.answered:
        self.answered[rec["rater"]].add(rec["trial"])
    self.lock = threading.Lock()
    self.log_path = self.folder / "server.log"

  def log(self, message: str) -> None:
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    with self.lock, open(self.log_path, "a", encoding="utf-8") as f:
      f.write(f"{stamp} {message}\n")

  def state(self, rater: str) -> dict:
    if rater not in self.trials:
      raise KeyError(rater)
    trials = []
    for t in self.meta["raters"][rater]:
      base = f"/img/{rater}/{t['id']}"
      trial = {"id": t["id"], "left": f"{base}/left", "right": f"{base}/right"}
      if self.meta["task"] == "with-input":
        trial["input"] = f"{base}/input"
      trials.append(trial)
    return {
      "rater": rater,
      "task": self.meta["task"],
      "question": self.meta["question"],
      "display_seconds": self.meta["display_seconds"],
      "trials": trials,
      "answered": sorted(self.answered[rater]),
    }

  def answer(self, body: dict) -> tuple[int, dict]:
    """(HTTP status, reply) for a posted answer; records it when it is new and valid."""
    rater, trial, choice = body.get("rater"), body.get("trial"), body.get("choice")
    rt = body.get("rt_ms")
    if rater not in self.trials:
      return 400, {"error": f"unknown rater {rater!r}"}
    if trial not in self.trials[rater]:
      return 400, {"error": f"rater {rater!r} has no trial {trial!r}"}
    if choice not in ("left", "right"):
      return 400, {"error": f"choice must be 'left' or 'right', not {choice!r}"}
    if not isinstance(rt, (int, float)) or isinstance(rt, bool) or not 0 <= rt < 3.6e6:
      return 400, {"error": f"rt_ms must be a number of milliseconds, not {rt!r}"}
    t = self.trials[rater][trial]
    rec = {
      "rater": rater,
      "trial": trial,
      "name": t["name"],
      "kind": t["kind"],
      "left": t["left"],
      "right": t["right"],
      "choice": t[choice],
      "rt_ms": round(float(rt), 1),
      "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
    }
    with self.lock:
      duplicate = trial in self.answered[rater]
      if not duplicate:
        responses.append(self.path, rec)
        self.answered[rater].add(trial)
    if duplicate:
      self.log(f"ignored a second answer: rater={rater} trial={trial} choice={choice}")
    return 200, {"ok": True, "duplicate": duplicate, "answered": len(self.answered[rater])}


def make_handler(study: Study):
  class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "sr3-study"

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
      pass  # answers go to responses.jsonl, refusals to server.log; no per-request noise

    def _send(self, status: int, body: bytes, ctype: str) -> None:
      self.send_response(status)
      self.send_header("Content-Type", ctype)
      self.send_header("Content-Length", str(len(body)))
      self.send_header("Cache-Control", "no-store")
      self.end_headers()
      self.wfile.write(body)

    def _json(self, status: int, obj: dict) -> None:
      self._send(status, json.dumps(obj).encode(), "application/json")

    def do_GET(self):
      url = urllib.parse.urlsplit(self.path)
      query = urllib.parse.parse_qs(url.query)
      path = urllib.parse.unquote(url.path)
      if path in ("/", "/index.html"):
        return self._send(200, (STATIC / "index.html").read_bytes(), STATIC_TYPES[".html"])
      if path.startswith("/static/"):
        name = path[len("/static/") :]
        f = STATIC / name
        if "/" not in name and f.suffix in STATIC_TYPES and f.is_file():
          return self._send(200, f.read_bytes(), STATIC_TYPES[f.suffix])
      if path == "/api/state":
        rater = query.get("rater", [""])[0]
        try:
          return self._json(200, study.state(rater))
        except KeyError:
          return self._json(404, {"error": f"unknown rater {rater!r}; use a link from the study"})
      if path in study.images:  # nothing else on disk is ever served
        return self._send(200, study.images[path].read_bytes(), "image/png")
      self._json(404, {"error": "not found"})

    def do_POST(self):
      if urllib.parse.urlsplit(self.path).path != "/api/answer":
        return self._json(404, {"error": "not found"})
      try:
        size = int(self.headers.get("Content-Length", "0"))
      except ValueError:
        size = -1
      if not 0 < size <= MAX_BODY:
        return self._json(400, {"error": "send one small JSON answer"})
      try:
        body = json.loads(self.rfile.read(size))
      except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
      if not isinstance(body, dict):
        study.log(f"refused a malformed answer from {self.client_address[0]}")
        return self._json(400, {"error": "the answer is not a JSON object"})
      status, reply = study.answer(body)
      if status != 200:
        study.log(f"refused an answer: {reply['error']}")
      self._json(status, reply)

  return Handler


def serve(folder, host: str = "127.0.0.1", port: int = 8000, out=sys.stdout, ready=None) -> None:
  """Serves the study until interrupted; prints one URL per rater."""
  study = Study(folder)
  httpd = http.server.ThreadingHTTPServer((host, port), make_handler(study))
  httpd.daemon_threads = True
  shown = "127.0.0.1" if host in ("", "0.0.0.0") else host
  base = f"http://{shown}:{httpd.server_address[1]}"
  done = sum(len(a) for a in study.answered.values())
  total = sum(len(t) for t in study.trials.values())
  print(f"serving {study.folder} at {base} ({done} of {total} answers given)", file=out)
  if study.malformed:
    print(f"skipped {study.malformed} malformed lines of {study.path}", file=out)
  for rater in study.trials:
    print(f"  {rater}: {base}/?rater={urllib.parse.quote(rater)}", file=out)
  out.flush()
  if ready is not None:
    ready(httpd)
  try:
    httpd.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    httpd.server_close()
