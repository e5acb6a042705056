"""How a command-line process runs a flow: against one Prefect API, with
SIGTERM stopping the work as Ctrl-C does, and without a slow exit."""

from __future__ import annotations

import gc
import os
import signal

from prefect.context import refresh_global_settings_context

from cli.render import say
from infra import prefect_api


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


_USING: set[str] = set()  # the homes this process already pointed Prefect at


def use_prefect(home: str) -> None:
    """Point every Prefect client in this process (threads and exit-time
    flushes included) at one API, never an ephemeral one; and let SIGTERM stop
    the work gracefully, as Ctrl-C does. Once per process."""
    if home in _USING:
        return
    _USING.add(home)
    own = not os.environ.get("PREFECT_API_URL")
    url = prefect_api.ensure_api(home, say)
    os.environ["PREFECT_API_URL"] = url
    if own:
        say(f"Prefect: dockyard's local server at {url.removesuffix('/api')} (`dockyard server stop` stops it)")
    else:
        say(f"Prefect: reporting to {url} (PREFECT_API_URL)")
    refresh_global_settings_context()
    signal.signal(signal.SIGTERM, _interrupt)


def skip_final_collection() -> None:
    """The work is done and written: spare the interpreter's full garbage collection
    at exit (about 1 s with Prefect and MLflow loaded). Exit handlers still run."""
    gc.freeze()
