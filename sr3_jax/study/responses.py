"""responses.jsonl: one JSON object per answer, appended, flushed and synced as it is given, so a
crash loses at most the answer in flight. A truncated last line (a crash mid-write) is sealed off
on the next start and skipped, with a count, by every reader."""

from __future__ import annotations

import json
import os
import pathlib

FILE = "responses.jsonl"
FIELDS = ("rater", "trial", "name", "kind", "left", "right", "choice", "rt_ms", "time")


def seal(path) -> None:
  """Ends a file whose last line was cut off with a newline, so the next answer starts a line of
  its own (the cut line stays malformed and is skipped by `read`)."""
  path = pathlib.Path(path)
  if path.exists() and path.stat().st_size:
    with open(path, "rb") as f:
      f.seek(-1, os.SEEK_END)
      last = f.read(1)
    if last != b"\n":
      with open(path, "ab") as f:
        f.write(b"\n")
        f.flush()
        os.fsync(f.fileno())


def append(path, record: dict) -> None:
  """Appends one answer and syncs it to disk."""
  line = json.dumps({k: record[k] for k in FIELDS}, separators=(",", ":")) + "\n"
  with open(path, "a", encoding="utf-8") as f:
    f.write(line)
    f.flush()
    os.fsync(f.fileno())


def read(path) -> tuple[list[dict], int]:
  """(answers, malformed lines): the first answer per (rater, trial) in file order; lines that are
  not JSON objects with every field, and repeats, are skipped (repeats are not counted malformed)."""
  path = pathlib.Path(path)
  if not path.exists():
    return [], 0
  out, seen, bad = [], set(), 0
  with open(path, encoding="utf-8", errors="replace") as f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      try:
        rec = json.loads(line)
      except json.JSONDecodeError:
        bad += 1
        continue
      if not isinstance(rec, dict) or any(k not in rec for k in FIELDS):
        bad += 1
        continue
      key = (rec["rater"], rec["trial"])
      if key not in seen:
        seen.add(key)
        out.append(rec)
  return out, bad
