"""Who may reach the server and what the admin API may load: checks made before serving.

- A server bound beyond loopback must have an API key (``--insecure`` overrides,
  for a network the operator trusts); anyone who can reach the port could
  otherwise run the model and read what it was tuned on.
- ``POST /admin/adapters`` loads only from folders under the ``--adapter-root``
  directories, checked after resolving the path (``..`` and symbolic links
  included), so an admin client cannot make the server read arbitrary files.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from ayar.errors import AyarError
from ayar.serve.protocol import OpenAIError

LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and the name localhost; False for 0.0.0.0, :: and every other address."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def check_bind(host: str, *, has_api_key: bool, insecure: bool) -> None:
    """Refuse to listen beyond loopback without an API key.

    Raises:
        AyarError: ``host`` is not a loopback address, there is no key and ``insecure`` is off.
    """
    if has_api_key or insecure or is_loopback(host):
        return
    raise AyarError(f"--host {host}: refusing to serve beyond this machine without an API key; pass "
                    "--api-key-env VAR (clients then send `Authorization: Bearer <key>`), or --insecure if every "
                    "host that can reach the port is trusted")


def check_roots(roots: list[str]) -> list[Path]:
    """The adapter roots, resolved.

    Raises:
        AyarError: a root is not an existing folder.
    """
    resolved = []
    for root in roots:
        path = Path(root).expanduser()
        if not path.is_dir():
            raise AyarError(f"--adapter-root {root}: not an existing folder")
        resolved.append(path.resolve())
    return resolved


def adapter_path(path: str, roots: list[Path]) -> Path:
    """The folder an admin request may load: ``path`` resolved, and inside one of ``roots``.

    A relative ``path`` is taken relative to each root in turn.

    Raises:
        OpenAIError: 403 when there are no roots or the resolved folder lies outside every
            root; 400 when it does not exist. Messages never reveal server paths.
    """
    if not roots:
        raise OpenAIError(403, "loading adapters over the API is off: start `ayar serve` with --adapter-root DIR "
                          "to allow folders under DIR", param="path", code="forbidden")
    given = Path(path).expanduser()
    candidates = [given] if given.is_absolute() else [root / given for root in roots]
    outside = False
    for candidate in candidates:
        resolved = candidate.resolve()
        if not any(resolved.is_relative_to(root) for root in roots):
            outside = True
            continue
        if resolved.is_dir():
            return resolved
    if outside:
        raise OpenAIError(403, f"{path}: outside the adapter roots this server may load from", param="path",
                          code="forbidden")
    raise OpenAIError(400, f"{path}: no such adapter folder under the adapter roots", param="path")
