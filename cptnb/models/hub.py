"""Is the Hugging Face Hub reachable? Asked once, in about a second, before anything waits on it.

huggingface_hub retries an unreachable endpoint five times with backoff (about 30 s per file) before
transformers looks in the cache; a planner or a notebook offline would sit through that for every
config, tokenizer and weight file. :func:`hub_reachable` opens one TCP connection to the endpoint
(``HF_ENDPOINT``, default https://huggingface.co) with a short timeout, in a thread so that a slow DNS
lookup cannot hold it up either, and remembers the answer for a minute. ``HF_HUB_OFFLINE=1`` answers
no without trying.

Example::

    if not hub_reachable():
        config = AutoConfig.from_pretrained(name, local_files_only=True)  # the cache, or an error at once
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from urllib.parse import urlparse

log = logging.getLogger(__name__)

PROBE_TIMEOUT_SECONDS = 2.0  # a reachable hub answers a TCP handshake well within this
PROBE_MEMORY_SECONDS = 60.0  # how long an answer is reused before asking again
_answers: dict[str, tuple[float, bool]] = {}  # endpoint -> (monotonic time asked, reachable)


def hub_endpoint() -> str:
    """The endpoint huggingface_hub talks to: ``HF_ENDPOINT`` as set now, else its default."""
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or "https://huggingface.co"


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` is set to a true value (huggingface_hub's own reading of it)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _connects(host: str, port: int, timeout: float) -> bool:
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)  # daemon: a hung DNS lookup never blocks exit
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def hub_reachable(timeout: float = PROBE_TIMEOUT_SECONDS) -> bool:
    """Whether the Hub endpoint accepts a connection now (False at once under ``HF_HUB_OFFLINE=1``)."""
    if hub_offline():
        return False
    endpoint = hub_endpoint()
    asked = _answers.get(endpoint)
    if asked is not None and time.monotonic() - asked[0] < PROBE_MEMORY_SECONDS:
        return asked[1]
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    reachable = bool(url.hostname) and _connects(url.hostname, port, timeout)
    if not reachable:
        log.debug("the Hugging Face Hub at %s cannot be reached: using the local cache only", endpoint)
    _answers[endpoint] = (time.monotonic(), reachable)
    return reachable
