"""The user's own settings, kept across server restarts: run store folder, data folder,
device, torch threads and precision.

They live in a small JSON file in the store folder the server starts with (KD_RUNS, else
`kd_runs/` in its working folder): that folder is known before any setting is read, so
the file can also point the dashboard at another store folder. Plain Python (no
Streamlit), so it is tested on its own; ui/state.py applies it to the sidebar.

A file that cannot be read (absent, corrupt, from a newer version) gives the defaults and,
unless absent, a one-line reason; a value of the wrong type or out of the choices offered
is dropped, never fatal.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

FILE_NAME = "kd_studio_settings.json"
KEYS = ("store_root", "data_root", "device", "threads", "precision")


def home() -> Path:
    """The store folder the server starts with: where the settings file is kept."""
    return Path(os.environ.get("KD_RUNS", "kd_runs"))


def defaults() -> dict:
    return {
        "store_root": os.environ.get("KD_RUNS", "kd_runs"),
        "data_root": os.environ.get("KD_DATA", "data"),
        "device": "auto",
        "threads": 0,
        "precision": "fp32",
    }


def path(folder: Path | None = None) -> Path:
    return Path(folder if folder is not None else home()) / FILE_NAME


def _clean(raw: dict, devices: list[str], threads: list[int], precisions: tuple[str, ...]) -> tuple[dict, list[str]]:
    """The valid settings of `raw`, and what was dropped (in words)."""
    out, dropped = {}, []
    for key in ("store_root", "data_root"):
        if key in raw:
            if isinstance(raw[key], str) and raw[key].strip():
                out[key] = raw[key].strip()
            else:
                dropped.append(f"{key}={raw[key]!r}")
    if "device" in raw:
        if raw["device"] in devices:
            out["device"] = raw["device"]
        else:
            dropped.append(f"device {raw['device']!r} (not available here)")
    if "threads" in raw:
        value = raw["threads"]
        if isinstance(value, int) and not isinstance(value, bool) and value in threads:
            out["threads"] = value
        else:
            dropped.append(f"threads={value!r}")
    if "precision" in raw:
        if raw["precision"] in precisions:
            out["precision"] = raw["precision"]
        else:
            dropped.append(f"precision={raw['precision']!r}")
    return out, dropped


def load(
    devices: list[str], threads: list[int], folder: Path | None = None, precisions: tuple[str, ...] = ("fp32",)
) -> tuple[dict, str | None]:
    """(settings, problem): the defaults overlaid with the file's valid values; `problem` says
    why some or all of the file was not used (None when all of it was, or there is none)."""
    settings = defaults()
    file = path(folder)
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return settings, None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return settings, f"the saved settings in {file} could not be read ({err}); using the defaults."
    if not isinstance(raw, dict):
        return settings, f"the saved settings in {file} are not a JSON object; using the defaults."
    valid, dropped = _clean(raw, devices, threads, precisions)
    settings.update(valid)
    problem = f"ignored from {file}: {', '.join(dropped)}." if dropped else None
    return settings, problem


def save(settings: dict, folder: Path | None = None) -> str | None:
    """Write KEYS of `settings` (atomically: a reader never sees half a file); the reason
    when it cannot be written, else None."""
    file = path(folder)
    payload = json.dumps({k: settings[k] for k in KEYS if k in settings}, indent=2, sort_keys=True)
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(payload + "\n", encoding="utf-8")
        os.replace(tmp, file)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        return f"the settings could not be saved to {file}: {err}"
    return None
