"""What one account may see: the vendors whose records it reads, and whether staff names are pseudonyms.

Every store function that lists, shows, counts or exports vendor data takes a ``Scope`` and applies
it in SQL, so a route cannot forget it and a count cannot leak what a list hides. Admins and
customer reviewers have ``Scope.everything()``; a reviewer scoped to some vendors reads only
theirs; a ``vendor_lead`` reads only their own vendor, with staff user names replaced by stable
pseudonyms unless a customer reviewer revealed one in a case (server/store/reveals.py).
Records of no vendor (the collector's own ``access`` events) are visible only to unscoped accounts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import false


@dataclass(frozen=True)
class Scope:
    vendor_ids: frozenset[int] | None = None
    """The vendors this account may read; None: every vendor and the records of none."""
    pseudonymize: bool = False
    """Show staff user names as pseudonyms (vendor leads)."""

    @classmethod
    def everything(cls) -> Scope:
        return cls()

    @classmethod
    def vendors(cls, vendor_ids: Iterable[int], *, pseudonymize: bool = False) -> Scope:
        return cls(frozenset(vendor_ids), pseudonymize)

    @property
    def unrestricted(self) -> bool:
        return self.vendor_ids is None

    def allows(self, vendor_id: int | None) -> bool:
        """Whether a record of ``vendor_id`` (None: of no vendor) is visible."""
        return self.vendor_ids is None or (vendor_id is not None and vendor_id in self.vendor_ids)

    def where(self, column: Any) -> Any | None:
        """A SQL condition on a vendor-id column, or None when nothing needs filtering."""
        if self.vendor_ids is None:
            return None
        if not self.vendor_ids:
            return false()
        return column.in_(sorted(self.vendor_ids))
