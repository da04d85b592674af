"""The one reading of a request's credentials: `Authorization: Bearer <token>`, the scheme in
any case as HTTP allows, for project keys and the platform admin's token alike."""

from __future__ import annotations


def bearer_token(authorization: str | None) -> str | None:
    """The token of a Bearer header; None for no header, another scheme or an empty token."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None
