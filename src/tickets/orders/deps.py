"""Access to one order: its buyer (with `X-Order-Token`) or staff of the gala."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request

from tickets.auth.deps import OptionalPrincipal
from tickets.auth.errors import RoleRequired
from tickets.auth.models import Role
from tickets.auth.service import Principal
from tickets.db import SessionDep
from tickets.keys import KeyRing
from tickets.orders import service as orders_service
from tickets.orders.errors import InvalidOrderToken, OrderNotFound
from tickets.orders.models import Order
from tickets.orders.schemas import OrderID

OrderToken = Annotated[
    str | None,
    Header(alias="X-Order-Token", description="The order's `access_token` (buyers).", max_length=200),
]


@dataclass
class OrderAccess:
    order: Order
    principal: Principal | None

    @property
    def is_staff(self) -> bool:
        return self.principal is not None and self.principal.has_role(Role.box_office)

    @property
    def is_admin(self) -> bool:
        return self.principal is not None and self.principal.has_role(Role.admin)


async def resolve_order_access(
    request: Request,
    session: SessionDep,
    principal: Principal | None,
    order_id: str,
    token: str | None,
    *,
    lock: bool,
) -> OrderAccess:
    keys: KeyRing = request.app.state.keys
    if token is not None and keys.check_order_token(order_id, token):
        # Checked before the lookup: a wrong token learns nothing about which orders exist.
        return OrderAccess(order=await orders_service.get_order(session, order_id, lock=lock), principal=principal)
    if principal is None:
        raise InvalidOrderToken("Send the order's access token in X-Order-Token.")
    if not principal.has_role(Role.box_office):
        raise RoleRequired("Reading orders needs the box_office or admin role, or the order's token.")
    order = await orders_service.get_order(session, order_id, lock=lock)
    if not principal.can_access_gala(order.gala_id):
        raise OrderNotFound(f"No order {order_id}.")
    return OrderAccess(order=order, principal=principal)


async def _order_access(
    request: Request,
    session: SessionDep,
    principal: OptionalPrincipal,
    order_id: OrderID,
    token: OrderToken = None,
) -> OrderAccess:
    return await resolve_order_access(request, session, principal, order_id, token, lock=False)


async def _order_access_for_update(
    request: Request,
    session: SessionDep,
    principal: OptionalPrincipal,
    order_id: OrderID,
    token: OrderToken = None,
) -> OrderAccess:
    return await resolve_order_access(request, session, principal, order_id, token, lock=True)


OrderAccessDep = Annotated[OrderAccess, Depends(_order_access)]
OrderAccessForUpdate = Annotated[OrderAccess, Depends(_order_access_for_update)]
