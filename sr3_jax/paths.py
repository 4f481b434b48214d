"""Paths as a user types them, made into the paths every command works with.

Local paths are resolved once, where a command starts: `~` is expanded and a relative path is
taken from the current directory, so that Orbax (which accepts only absolute paths), TFDS and
Grain see one absolute path whatever the working directory is later. Remote URLs (`gs://…`, or
any other `scheme://…` that etils.epath opens) pass through unchanged.
"""

from __future__ import annotations

import os
import re

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_remote(path: str | os.PathLike) -> bool:
  """Whether `path` is a URL such as gs://bucket/run (not a local path)."""
  return bool(_URL.match(os.fspath(path)))


def resolve(path: str | os.PathLike | None) -> str | None:
  """An absolute local path (`~` expanded, relative to the current directory) or the URL as given.

  None and "" stay as they are (an unset optional path).
  """
  if path is None:
    return None
  text = os.fspath(path)
  if not text or is_remote(text):
    return text
  return os.path.abspath(os.path.expanduser(text))
