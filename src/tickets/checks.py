"""Inventory invariants, checked directly in the database (`tickets check`, and the tests).

1. Every sold seat or place belongs to exactly one valid ticket, of a paid order.
2. Every valid ticket's seat is sold to that ticket's order.
3. No seat or place is in two live orders (paid, or pending and not expired).
4. A held seat is held by a pending order.
5. Held (unexpired) plus sold never exceeds a tier's quota, nor an area's capacity.
6. A promo code's live uses never exceed its limit.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import create_engine, text

from tickets.config import sync_database_url

_LIVE = "(o.status IN ('paid','partially_refunded') OR (o.status = 'pending' AND o.expires_at > :now))"


def find_violations(database_url: str, *, now: datetime | None = None) -> list[str]:
    now = now or datetime.now(UTC)
    url = sync_database_url(database_url)
    engine = create_engine(url)
    bind_now: object = now.replace(tzinfo=None) if url.startswith("sqlite") else now
    out: list[str] = []
    try:
        with engine.connect() as conn:

            def q(sql: str) -> list[tuple[object, ...]]:
                return [tuple(r) for r in conn.execute(text(sql), {"now": bind_now})]

            for seat_id, n in q(
                "SELECT s.id, COUNT(t.id) FROM seat s LEFT JOIN ticket t ON t.seat_id = s.id AND t.status = 'valid' "
                "WHERE s.status = 'sold' GROUP BY s.id HAVING COUNT(t.id) <> 1"
            ):
                out.append(f"seat {seat_id} is sold but has {n} valid tickets")
            for seat_id, order_id, status in q(
                'SELECT s.id, s.order_id, o.status FROM seat s LEFT JOIN "order" o ON o.id = s.order_id '
                "WHERE s.status = 'sold' AND (o.id IS NULL OR o.status NOT IN ('paid','partially_refunded','refunded'))"
            ):
                out.append(f"seat {seat_id} is sold to order {order_id} whose status is {status}")
            for ticket_id, seat_id, seat_status, seat_order, ticket_order in q(
                "SELECT t.id, t.seat_id, s.status, s.order_id, t.order_id FROM ticket t JOIN seat s ON s.id = t.seat_id"
                " WHERE t.status = 'valid' AND (s.status <> 'sold' OR s.order_id IS NULL OR s.order_id <> t.order_id)"
            ):
                out.append(
                    f"valid ticket {ticket_id} of order {ticket_order}: seat {seat_id} is {seat_status} "
                    f"for order {seat_order}"
                )
            for seat_id, n in q(
                f'SELECT i.seat_id, COUNT(DISTINCT i.order_id) FROM order_item i JOIN "order" o ON o.id = i.order_id '
                f"WHERE {_LIVE} GROUP BY i.seat_id HAVING COUNT(DISTINCT i.order_id) > 1"
            ):
                out.append(f"seat {seat_id} is in {n} live orders")
            for seat_id, order_id, status in q(
                'SELECT s.id, s.order_id, o.status FROM seat s LEFT JOIN "order" o ON o.id = s.order_id '
                "WHERE s.status = 'held' AND s.hold_expires_at > :now AND (o.id IS NULL OR o.status <> 'pending')"
            ):
                out.append(f"seat {seat_id} is held for order {order_id} whose status is {status}")
            for tt_id, quota, n in q(
                "SELECT tt.id, tt.quota, COUNT(s.id) FROM ticket_type tt JOIN seat s ON s.ticket_type_id = tt.id "
                "WHERE tt.quota IS NOT NULL AND (s.status = 'sold' OR (s.status = 'held' AND s.hold_expires_at > :now))"
                " GROUP BY tt.id, tt.quota HAVING COUNT(s.id) > tt.quota"
            ):
                out.append(f"ticket type {tt_id}: {n} held or sold, over its quota of {quota}")
            for section_id, capacity, n in q(
                "SELECT sec.id, sec.capacity, COUNT(s.id) FROM section sec JOIN seat s ON s.section_id = sec.id "
                "GROUP BY sec.id, sec.capacity HAVING COUNT(s.id) <> sec.capacity"
            ):
                out.append(f"section {section_id}: {n} seats or places, but its capacity says {capacity}")
            for promo_id, max_uses, n in q(
                f'SELECT p.id, p.max_uses, COUNT(o.id) FROM promo_code p JOIN "order" o ON o.promo_code_id = p.id '
                f"WHERE p.max_uses IS NOT NULL AND ({_LIVE} OR o.status = 'refunded') "
                f"GROUP BY p.id, p.max_uses HAVING COUNT(o.id) > p.max_uses"
            ):
                out.append(f"promo code {promo_id}: {n} live uses, over its limit of {max_uses}")
    finally:
        engine.dispose()
    return out
