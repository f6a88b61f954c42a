"""Who may do what, said once for every entry point (API, CLI, MCP): account-wide
operations need an unrestricted token, the reseller API a reseller account."""

from __future__ import annotations

from ..errors import Forbidden
from ..models import Principal


def require_unrestricted(principal: Principal) -> None:
    """Account-wide operations are not for a token restricted to some domains."""
    if principal.domains is not None:
        raise Forbidden("forbidden", "This token is restricted to some domains; this "
                        "operation concerns the whole account.")


def require_reseller(principal: Principal) -> None:
    """The reseller API: an unrestricted token of an account that may have children."""
    require_unrestricted(principal)
    if not principal.reseller:
        raise Forbidden("not_reseller", "This account cannot have sub-accounts.")
