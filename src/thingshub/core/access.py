"""Who may do what through the HTTP API, the live stream and the console.

Rules (interfaces.md, "API keys and roles"):
- Three roles, each one able to do all the one below it can: `reader`
  (every GET and the live stream), `operator` (also registers and deletes
  devices and acts on them), `admin` (everything, products and keys
  included).
- A key may be limited to some products: it sees only those, and anything
  of another product is absent to it (404, left out of lists and of the
  stream). `products` None means every product.
- Some acts are only for a key that sees every product (`Need.everywhere`):
  creating products and managing keys. A key limited to products could
  otherwise make itself a key without the limit, or a product it would not
  see.
- Pure values and rules: the API (api/roles.py) and the console decide with
  these, so both agree.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

READER = "reader"
OPERATOR = "operator"
ADMIN = "admin"
#: The roles, weakest first: each may do everything of those before it.
ROLES = (READER, OPERATOR, ADMIN)
_RANK = {role: rank for rank, role in enumerate(ROLES)}


def is_role(value: object) -> bool:
    return isinstance(value, str) and value in _RANK


@dataclass(frozen=True, slots=True)
class Need:
    """What a route or a console control requires."""

    role: str
    #: Only for a key that sees every product.
    everywhere: bool = False


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request comes from: a key's role and the products it sees."""

    role: str
    #: The products it is limited to; None: every product.
    products: frozenset[str] | None = None
    #: The stored key's id; None for the serve key.
    key_id: str | None = None

    def may(self, need: Need) -> bool:
        """Whether its role (and reach) is enough for `need`."""
        if _RANK[self.role] < _RANK[need.role]:
            return False
        return not need.everywhere or self.products is None

    def sees(self, product_id: str) -> bool:
        return self.products is None or product_id in self.products

    def visible(self, product_ids: Collection[str]) -> list[str]:
        """Those of `product_ids` it sees, in their order."""
        return [p for p in product_ids if self.sees(p)]


#: The key given to `serve`: an admin of every product.
SERVE = Principal(ADMIN)
