"""One reading of credentials for the API, the Studio and the admin API: `Bearer <token>`, the
scheme in any case (RFC 9110), nothing else taken for a token."""

from __future__ import annotations

import pytest

from gateway.credentials import bearer_token


@pytest.mark.parametrize(("header", "token"), [
    ("Bearer af-1", "af-1"), ("bearer  af-1 ", "af-1"), ("BEARER af-1", "af-1"),
    ("Basic YWxhZGRpbjpvcGVu", None), ("Bearer", None), ("Bearer   ", None), ("af-1", None),
    ("", None), (None, None)])
def test_only_a_bearer_header_carries_a_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token
