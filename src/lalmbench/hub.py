"""The Hugging Face hub as lalmbench reaches it: endpoint, offline switch, and a fast reachability probe.

Loading a model through transformers with the hub unreachable and the files not cached retries each file
with back-off (measured: 70-92 s before `check` on the Whisper example failed). `offline_if_unreachable`
asks the hub once, with a short timeout and no retries, before an encoder or decoder is built: when it
does not answer, this process switches huggingface_hub to offline mode (cached files only), so loading
either succeeds from the cache at once or fails at once, and a warning names the cause and
HF_HUB_OFFLINE.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_SECONDS = 5.0
_probed: dict[str, str | None] = {}  # endpoint -> None (answered) or why not; one probe per process


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def is_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) set to a true value."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in ("1", "true", "yes", "on")


def offline_reason() -> str | None:
    """Why this process does not download, in words for an error message; None when it may.

    The environment's switch (naming the variable that is set) or the reachability probe's finding (the
    hub did not answer, so `offline_if_unreachable` switched this process to cached files only)."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        value = os.environ.get(name)
        if value:  # the first one set decides, as in is_offline
            if value.strip().lower() in ("1", "true", "yes", "on"):
                return f"{name}={value.strip()} is set"
            break
    reason = _probed.get(hub_endpoint())
    if reason is not None:
        return f"the hub at {hub_endpoint()} did not answer when this command started ({reason})"
    return None


def offline_by_environment() -> str | None:
    """The environment variable that switches this process offline (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE), if any."""
    reason = offline_reason() if is_offline() else None
    return reason.split("=", 1)[0] if reason else None


def unreachable_reason(timeout: float = PROBE_SECONDS) -> str | None:
    """None when the hub answers at all (any HTTP status); otherwise why it did not."""
    endpoint = hub_endpoint()
    if endpoint not in _probed:
        from huggingface_hub.utils import get_session

        try:
            get_session().head(f"{endpoint}/api/models", timeout=timeout)
            _probed[endpoint] = None
        except Exception as exc:  # no answer: DNS, refused, timeout, proxy; any answer counts as reachable
            _probed[endpoint] = f"{type(exc).__name__}: {exc}"
    return _probed[endpoint]


def offline_if_unreachable() -> bool:
    """Switch huggingface_hub to offline mode when the hub does not answer; True when it switched."""
    from huggingface_hub import constants

    if is_offline() or constants.HF_HUB_OFFLINE:
        return False
    reason = unreachable_reason()
    if reason is None:
        return False
    constants.HF_HUB_OFFLINE = True  # read at call time by huggingface_hub and transformers
    log.warning("the hub at %s does not answer (%s): models load from the files cached on this machine only, "
                "as with HF_HUB_OFFLINE=1 (set it to skip this check)", hub_endpoint(), reason)
    return True
