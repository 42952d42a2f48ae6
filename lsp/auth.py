"""Who may talk to a server listening on TCP: one client, holding the session's token, from this machine.

Over stdio the editor that started the server is its only client. A TCP port is open to every process
on the machine (and beyond, on a non-loopback address): whoever connects could read documents, replace
their text or stop the server. So a TCP server

- refuses to listen on an address that is not loopback unless told so explicitly (`--allow-remote`);
- takes the token from `SUPERPIE_TOKEN` (an editor that starts the server sets it; it is removed from
  the environment so that no child process inherits it), else makes one and prints it on stderr;
- accepts a connection only when its first message is `initialize` with that token in
  `initializationOptions.token`, and after that no other connection at all.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from typing import Any

TOKEN_ENV = "SUPERPIE_TOKEN"
TOKEN_KEY = "token"  # initializationOptions.token
_MIN_TOKEN = 16  # characters: a short token is guessable over many connections


class AuthError(ValueError):
    """A TCP set-up the server refuses to run with (message for the user)."""


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only (`localhost`, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # another host name: it may resolve anywhere
        return False


def check_host(host: str, allow_remote: bool) -> None:
    """Refuse a non-loopback address unless the user allowed it explicitly."""
    if not is_loopback(host) and not allow_remote:
        raise AuthError(
            f"refusing to listen on {host}: anyone who can reach it could read and change your code "
            "(use 127.0.0.1, or --allow-remote if you really mean it)"
        )


def session_token(environ: dict[str, str] | None = None) -> tuple[str, bool]:
    """(the token, whether it was generated here and so must be shown to the user)."""
    env = os.environ if environ is None else environ
    given = env.pop(TOKEN_ENV, None)
    if given is not None:
        if len(given) < _MIN_TOKEN:
            raise AuthError(f"{TOKEN_ENV} must be at least {_MIN_TOKEN} characters")
        return given, False
    return secrets.token_urlsafe(32), True


def split_token(options: Any) -> tuple[str | None, Any]:
    """(the token in initialization options, the options without it): the token is no option of the tree."""
    if not isinstance(options, dict) or TOKEN_KEY not in options:
        return None, options
    rest = {k: v for k, v in options.items() if k != TOKEN_KEY}
    token = options[TOKEN_KEY]
    return (token if isinstance(token, str) else None), rest


def authorizes(message: object, token: str) -> bool:
    """Whether a raw first message is `initialize` carrying the session's token (compared in constant time)."""
    if not isinstance(message, dict) or message.get("method") != "initialize":
        return False
    params = message.get("params")
    given, _ = split_token(params.get("initializationOptions") if isinstance(params, dict) else None)
    return given is not None and hmac.compare_digest(given.encode(), token.encode())
