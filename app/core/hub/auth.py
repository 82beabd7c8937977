"""The Hugging Face login, stored exactly where huggingface_hub keeps it (``hf auth login`` and
every huggingface_hub call see the same token). The token itself is never logged or returned."""

from __future__ import annotations

import logging
import os

from app.core.errors import LoginError

log = logging.getLogger(__name__)

ENV_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def token_from_environment() -> bool:
    """True when the token comes from HF_TOKEN (it wins over a stored one; logout cannot clear it)."""
    return any(os.environ.get(name) for name in ENV_VARS)


def has_token() -> bool:
    from huggingface_hub import get_token

    return get_token() is not None


def login(token: str) -> str:
    """Check ``token`` with the Hub and store it as huggingface_hub's active token (no git
    credential); returns the user name."""
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError

    token = token.strip()
    if not token:
        raise LoginError("paste a Hugging Face access token (huggingface.co/settings/tokens)")
    try:
        huggingface_hub.login(token=token, add_to_git_credential=False)
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            raise LoginError("the Hub refused this token: check that it is complete and not revoked") from None
        raise LoginError(f"the Hub could not check the token (HTTP {status})") from None
    except ValueError as exc:  # an organization token
        raise LoginError(str(exc)) from None
    except Exception as exc:  # network (httpx) errors; only the type is shown: never the request
        raise LoginError(f"the Hub could not be reached ({type(exc).__name__}); try again when online") from None
    try:  # the same client and Hub that login() just asked
        name = str(huggingface_hub.whoami(token=token, cache=True).get("name") or "?")
    except Exception:  # logged in all the same; the name shows on the next check
        name = "?"
    log.info("logged in to the Hugging Face Hub as %s", name)
    return name


def logout() -> None:
    """Forget the stored token (all of huggingface_hub's stored tokens)."""
    import huggingface_hub

    try:
        huggingface_hub.logout()
    except OSError:  # HF_TOKEN is set: the stored token is gone, the variable stays
        raise LoginError("the stored token is removed, but HF_TOKEN is set in the environment and still logs you in") from None
    log.info("logged out of the Hugging Face Hub")


def current_user(endpoint: str | None = None) -> str | None:
    """The Hub user name of the active token; None when there is no token. Raises LoginError
    when the token is refused or the Hub cannot be reached (a network call: not on the GUI thread)."""
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    token = get_token()
    if token is None:
        return None
    try:
        info = HfApi(endpoint=endpoint).whoami(token=token)
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            raise LoginError("the stored token is refused by the Hub: log in again") from None
        raise LoginError(f"the Hub could not check the token (HTTP {status})") from None
    except Exception as exc:  # network (httpx) errors
        raise LoginError(f"the Hub could not be reached ({type(exc).__name__})") from None
    return str(info.get("name") or "?")
