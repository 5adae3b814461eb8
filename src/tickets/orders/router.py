from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import Insert

from tickets import idempotency
from tickets.auth.deps import AdminKey, BoxOfficeKey, OptionalPrincipal, principal_of
from tickets.auth.errors import GalaNotAllowed, RoleRequired
from tickets.clock import utc_now
from tickets.csvexport import CSV_CONTENT, csv_response, wants_csv
from tickets.db import Database, SessionDep, request_transaction
from tickets.fastpath import FastPathRoute, fast_path, json_body
from tickets.galas.errors import GalaNotFound, GalaNotOnSale
from tickets.galas.schemas import GalaID
from tickets.gate import back_through_gate, leave_gate
from tickets.keys import KeyRing
from tickets.orders import service as orders_service
from tickets.orders.deps import OrderAccessDep, OrderAccessForUpdate
from tickets.orders.errors import (
    DuplicatePromoCode,
    IdempotencyKeyReused,
    InvalidItem,
    InvalidOrderToken,
    OrderExpired,
    OrderNotFound,
    OrderNotPending,
    PaymentsNotConfigured,
    PromoCodeExhausted,
    PromoCodeInvalid,
    PromoCodeNotFound,
    SalesEnded,
    SalesNotOpen,
    SeatUnavailable,
    SoldOut,
    TableNotFound,
    TooFewTickets,
    TooManyTickets,
)
from tickets.orders.models import Order, OrderItem, OrderStatus, PaymentProvider
from tickets.orders.schemas import (
    CompOrderCreate,
    OrderCreate,
    OrderItemRead,
    OrderRead,
    PaymentRead,
    PromoCodeCreate,
    PromoCodeID,
    PromoCodeRead,
    PromoCodeUpdate,
)
from tickets.pagination import Cursor, InvalidCursor, Limit, Page
from tickets.payments import service as payments_service
from tickets.payments.errors import PaymentProviderError
from tickets.problems import Busy, InvalidApiKey, RateLimited, Unauthenticated, problem_responses

router = APIRouter(prefix="/orders", tags=["Orders"], route_class=FastPathRoute)
comp_router = APIRouter(prefix="/comp-orders", tags=["Orders"])
promo_router = APIRouter(prefix="/galas/{gala_id}/promo-codes", tags=["Promo codes"])

IDEMPOTENCY_KEY_MAX = 255
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Makes the request safe to retry: the same key and body return the first answer again.",
        max_length=IDEMPOTENCY_KEY_MAX,
    ),
]

PLACE_PROBLEMS = (
    InvalidApiKey,
    GalaNotFound,
    GalaNotOnSale,
    SeatUnavailable,
    SoldOut,
    SalesNotOpen,
    SalesEnded,
    TooManyTickets,
    TooFewTickets,
    InvalidItem,
    TableNotFound,
    PromoCodeInvalid,
    PromoCodeExhausted,
    IdempotencyKeyReused,
    Busy,
)


def order_read(keys: KeyRing, order: Order, items: Sequence[OrderItem], *, now: datetime) -> OrderRead:
    return OrderRead(
        id=order.id,
        status=orders_service.effective_status(order, now),
        gala_id=order.gala_id,
        buyer_email=order.buyer_email,
        buyer_name=order.buyer_name,
        items=[
            OrderItemRead(
                id=i.id,
                ticket_type_id=i.ticket_type_id,
                section_id=i.section_id,
                seat_id=i.seat_id if i.seat_label is not None else None,
                seat_label=i.seat_label,
                table=i.table,
                price_amount=i.price_amount,
                discount_amount=i.discount_amount,
                attendee_name=i.attendee_name,
                attendee_email=i.attendee_email,
                dietary=i.dietary,
            )
            for i in items
        ],
        subtotal_amount=order.subtotal_amount,
        discount_amount=order.discount_amount,
        total_amount=order.total_amount,
        refunded_amount=order.refunded_amount,
        currency=order.currency,
        promo_code=order.promo_code,
        expires_at=order.expires_at if order.status == OrderStatus.pending else None,
        created_at=order.created_at,
        paid_at=order.paid_at,
        cancelled_at=order.cancelled_at,
        access_token=keys.order_access_token(order.id),
        payment=PaymentRead(
            provider=PaymentProvider(order.payment_provider),
            payment_intent_id=order.payment_intent_id,
            client_secret=order.client_secret if order.status == OrderStatus.pending else None,
        ),
    )


async def _create_order_fast(request: Request) -> Response | None:
    """`create_order` without FastAPI's dependency solving, for a request with a valid JSON body
    (tickets.fastpath)."""
    body = await json_body(request, OrderCreate)
    key = request.headers.get("idempotency-key")
    if body is None or (key is not None and len(key) > IDEMPOTENCY_KEY_MAX):
        return None
    principal = await principal_of(request)
    async with request_transaction(request) as session:
        return await create_order(request, body, session, principal, key)


class _Answer:
    """A new order's answer, made once: for the response, and (with an atomic run's `keep`) as the rows
    of its Idempotency-Key's stored answer, which `place_order(also=...)` inserts with the order."""

    def __init__(self, keys: KeyRing, keep: idempotency.Keep | None, now: datetime) -> None:
        self.keys, self.keep, self.now = keys, keep, now
        self.made: OrderRead | None = None

    @property
    def also(self) -> Callable[[Order, list[OrderItem]], Sequence[tuple[Insert, Sequence[dict[str, Any]]]]] | None:
        """For `place_order(also=...)`: the stored answer's rows, or nothing outside an atomic run."""
        return self._rows if self.keep is not None else None

    def _rows(self, order: Order, items: list[OrderItem]) -> Sequence[tuple[Insert, Sequence[dict[str, Any]]]]:
        assert self.keep is not None
        self.made = self.of(order, items)
        return self.keep.rows(self.made)

    def of(self, order: Order, items: list[OrderItem]) -> OrderRead:
        return self.made or order_read(self.keys, order, items, now=self.now)


@router.post(
    "",
    status_code=201,
    response_model=OrderRead,
    summary="Create an order",
    responses=problem_responses(*PLACE_PROBLEMS, PaymentsNotConfigured, PaymentProviderError, RateLimited),
)
@fast_path(_create_order_fast)
async def create_order(
    request: Request,
    body: OrderCreate,
    session: SessionDep,
    principal: OptionalPrincipal,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Hold the requested seats, tables and general-admission places (all or nothing) until
    `expires_at`, and start the Stripe payment: confirm `payment.client_secret` with Stripe.js.
    An order whose total is 0 is `paid` at once and its tickets are issued. Keep the `access_token`:
    it is the buyer's key to the order (`X-Order-Token`)."""
    settings = request.app.state.settings
    db: Database = request.app.state.db
    keys: KeyRing = request.app.state.keys
    client_ip = request.client.host if request.client else "unknown"
    await request.app.state.rate_limiter.check("orders", client_ip, settings.orders_limit)

    plan: orders_service.Plan | None = None  # read by `refusal`, then reused by `handler`

    async def refusal() -> None:
        # Rules, prices and inventory read from the committed state, with no lock and no transaction:
        # most of a sell-out's orders are refused here, without making any buyer wait.
        nonlocal plan
        async with db.glances() as glance:
            now = utc_now()
            plan = await orders_service.plan_order(glance, body, settings=settings, now=now, glance=db)
        if not settings.unsafe_naive_holds:
            await orders_service.refuse_if_taken(db, plan, now=now)

    async def handler(keep: idempotency.Keep | None = None) -> OrderRead:
        nonlocal plan
        now = utc_now()
        known, plan = plan, None  # the hold fills the plan in: a second run (see idempotency.run) plans anew
        answer = _Answer(keys, keep, now)
        order, items = await orders_service.place_order(
            session, body, settings=settings, now=now, plan=known, also=answer.also
        )
        if order.payment_provider == PaymentProvider.stripe:
            await session.commit()  # release the seat locks before the network call
            leave_gate(request)  # and let the next order in while Stripe answers
            await payments_service.start_payment(
                session, db, order, settings=settings, answered=lambda: back_through_gate(request)
            )
        return answer.of(order, items)

    scope = f"orders:{principal.key_id if principal else 'public'}"
    return await idempotency.run(
        request,
        session,
        scope=scope,
        key=idempotency_key,
        body=body,
        status_code=201,
        handler=handler,
        refusal=refusal,
        # An order paid at once (free) is one transaction; a card payment commits its hold first.
        atomic=lambda: plan is not None and plan.total == 0 and not settings.unsafe_naive_holds,
    )


@comp_router.post(
    "",
    status_code=201,
    response_model=OrderRead,
    summary="Create a comp or pay-at-door order",
    responses=problem_responses(*PLACE_PROBLEMS, Unauthenticated, RoleRequired, GalaNotAllowed),
)
async def create_comp_order(
    request: Request,
    body: CompOrderCreate,
    session: SessionDep,
    principal: BoxOfficeKey,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Box office: complimentary tickets (`comp`, total 0) or tickets paid outside Stripe (`cash`,
    `invoice`). The order is `paid` at once and its tickets issued; it may take blocked seats and is not
    bound by sales windows or per-order maximums. Works while the gala is on sale or closed."""
    keys: KeyRing = request.app.state.keys
    settings = request.app.state.settings

    async def handler(keep: idempotency.Keep | None = None) -> OrderRead:
        now = utc_now()
        answer = _Answer(keys, keep, now)
        order, items = await orders_service.place_order(
            session,
            body,
            settings=settings,
            now=now,
            payment_method=PaymentProvider(body.payment_method),
            principal=principal,
            also=answer.also,
        )
        return answer.of(order, items)

    return await idempotency.run(
        request,
        session,
        scope=f"comp-orders:{principal.key_id}",
        key=idempotency_key,
        body=body,
        status_code=201,
        handler=handler,
        atomic=lambda: not settings.unsafe_naive_holds,  # paid at once: one transaction
    )


@router.get(
    "",
    summary="List orders",
    response_model=Page[OrderRead],
    responses={
        **problem_responses(Unauthenticated, InvalidApiKey, RoleRequired, GalaNotAllowed, InvalidCursor),
        200: {
            "description": "JSON page of orders, or every matching order as CSV with `Accept: text/csv`.",
            "content": CSV_CONTENT,
        },
    },
)
async def list_orders(
    request: Request,
    session: SessionDep,
    principal: BoxOfficeKey,
    gala_id: str | None = Query(
        default=None, pattern="^gal_[A-Za-z0-9]{1,40}$", description="Only this gala's orders."
    ),
    status: OrderStatus | None = Query(default=None, description="Only orders in this stored status."),
    email: str | None = Query(default=None, max_length=320, description="Only orders of this buyer email."),
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[OrderRead] | Response:
    """Box office and admin: orders, oldest first, filtered by gala, status or buyer email.

    With `Accept: text/csv`, every matching order (no pages) as a CSV for the treasurer: one row per
    order with its status, buyer, ticket count, amounts in minor units (`net_amount` is the total less
    refunds), promo code, and how it was paid (`payment_provider`, Stripe's `payment_intent_id`), to
    match against the payouts. Cells a spreadsheet would run as formulas are prefixed with `'`."""
    now = utc_now()
    if wants_csv(request):
        pages = orders_service.all_orders(session, principal=principal, gala_id=gala_id, status=status, email=email)
        rows = ([_csv_value(order, n, c, now) for c in ORDER_CSV_COLUMNS] async for order, n in pages)
        return await csv_response(ORDER_CSV_COLUMNS, rows, filename=f"orders-{gala_id or 'all'}.csv")
    orders, next_cursor = await orders_service.list_orders(
        session, principal=principal, gala_id=gala_id, status=status, email=email, limit=limit, cursor=cursor
    )
    items = await orders_service.get_items_for(session, [o.id for o in orders])
    keys: KeyRing = request.app.state.keys
    return Page[OrderRead](data=[order_read(keys, o, items[o.id], now=now) for o in orders], next_cursor=next_cursor)


ORDER_CSV_COLUMNS = (
    "id",
    "gala_id",
    "status",
    "created_at",
    "paid_at",
    "cancelled_at",
    "buyer_name",
    "buyer_email",
    "tickets",
    "currency",
    "subtotal_amount",
    "discount_amount",
    "total_amount",
    "refunded_amount",
    "net_amount",
    "promo_code",
    "payment_provider",
    "payment_intent_id",
)


def _csv_value(order: Order, tickets: int, column: str, now: datetime) -> object:
    if column == "status":
        return orders_service.effective_status(order, now).value
    if column == "tickets":
        return tickets
    if column == "net_amount":
        return order.total_amount - order.refunded_amount
    return getattr(order, column)


@router.get(
    "/{order_id}",
    summary="Read an order",
    responses=problem_responses(InvalidApiKey, InvalidOrderToken, RoleRequired, OrderNotFound),
)
async def read_order(request: Request, access: OrderAccessDep, session: SessionDep) -> OrderRead:
    """The buyer (with `X-Order-Token`) or box office / admin. A pending card order is first checked
    with Stripe, so a payment whose webhook has not arrived yet already shows as `paid`. A pending
    order past `expires_at` reads as `expired`."""
    order = access.order
    settings = request.app.state.settings
    if order.status == OrderStatus.pending and order.payment_intent_id and settings.payments_enabled:
        try:
            if await payments_service.reconcile_order(request.app.state.db, settings, order.id) != "nothing_to_do":
                await session.commit()  # see the reconciled state in a fresh transaction
                await session.refresh(order)
        except PaymentProviderError:
            pass  # Stripe unreachable: show what we know
    items = await orders_service.get_items(session, order.id)
    return order_read(request.app.state.keys, order, items, now=utc_now())


@router.post(
    "/{order_id}/cancel",
    summary="Cancel a pending order",
    responses=problem_responses(
        InvalidApiKey, InvalidOrderToken, RoleRequired, OrderNotFound, OrderNotPending, OrderExpired
    ),
)
async def cancel_order(request: Request, access: OrderAccessForUpdate, session: SessionDep) -> OrderRead:
    """Cancel a pending order (the buyer or staff): its seats and places are released at once.
    Cancelling a cancelled order again is harmless. Paid orders are refunded instead."""
    now = utc_now()
    order = await orders_service.cancel_order(session, access.order.id, now=now)
    items = await orders_service.get_items(session, order.id)
    return order_read(request.app.state.keys, order, items, now=now)


# --- promo codes ---------------------------------------------------------------------------------

PROMO_ADMIN = (Unauthenticated, InvalidApiKey, RoleRequired, GalaNotAllowed, GalaNotFound)


@promo_router.post(
    "",
    status_code=201,
    summary="Create a promo code",
    responses=problem_responses(*PROMO_ADMIN, DuplicatePromoCode, InvalidItem),
)
async def create_promo_code(
    gala_id: GalaID, body: PromoCodeCreate, session: SessionDep, principal: AdminKey
) -> PromoCodeRead:
    """A percentage or fixed-amount discount for one gala, optionally for some ticket types only, with a
    validity window and a limit of orders. A use is released when its order expires or is cancelled."""
    principal.require_gala(gala_id)
    promo = await orders_service.create_promo_code(session, gala_id, body, now=utc_now())
    return PromoCodeRead.from_model(promo, uses=0)


@promo_router.get("", summary="List promo codes", responses=problem_responses(*PROMO_ADMIN))
async def list_promo_codes(gala_id: GalaID, session: SessionDep, principal: AdminKey) -> list[PromoCodeRead]:
    """Every promo code of the gala with its live use count."""
    principal.require_gala(gala_id)
    promos = await orders_service.list_promo_codes(session, gala_id)
    uses = await orders_service.promo_uses(session, [p.id for p in promos], now=utc_now())
    return [PromoCodeRead.from_model(p, uses=uses.get(p.id, 0)) for p in promos]


@promo_router.patch(
    "/{promo_code_id}",
    summary="Update a promo code",
    responses=problem_responses(*PROMO_ADMIN, PromoCodeNotFound),
)
async def update_promo_code(
    gala_id: GalaID,
    promo_code_id: PromoCodeID,
    body: PromoCodeUpdate,
    session: SessionDep,
    principal: AdminKey,
) -> PromoCodeRead:
    """Switch a code on or off, or change its limit or window."""
    principal.require_gala(gala_id)
    promo = await orders_service.update_promo_code(session, gala_id, promo_code_id, body)
    uses = await orders_service.promo_uses(session, [promo.id], now=utc_now())
    return PromoCodeRead.from_model(promo, uses=uses.get(promo.id, 0))
