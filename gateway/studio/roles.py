"""Who may do what in the Studio, and the one answer for what is not there (or not theirs)."""

from __future__ import annotations

from gateway.protocol import GatewayError
from gateway.tenancy import Principal

ROLE_RANK = {"viewer": 0, "member": 1, "owner": 2}  # viewers read, members work, owners decide


def not_found(what: str) -> GatewayError:
    """Missing and another project's look the same."""
    return GatewayError(404, f"No {what} with that name in this project.",
                        "invalid_request_error", "not_found")


def require(principal: Principal, role: str, action: str) -> None:
    if ROLE_RANK.get(principal.role, -1) < ROLE_RANK[role]:
        raise GatewayError(403, f"Role '{principal.role}' may not {action}; it needs "
                                f"'{role}'.", "permission_error", "insufficient_role")
