"""Ticket renderings: the QR code (PNG, SVG) and the printable PDF, one page per ticket.

Everything here is pure and blocking (Pillow, fpdf2): routes and the mail job call it through
`asyncio.to_thread`, never on the event loop.
"""

from __future__ import annotations

import io
import logging
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import qrcode
from fpdf import FPDF
from qrcode.constants import ERROR_CORRECT_M

# The code is 172 base32 characters: QR version 7 at level M. The API promises version 10 at most.
MAX_QR_VERSION = 10
QUIET_ZONE = 4  # modules of white around the code, as the QR standard asks

# fpdf2 warns (with the text) when a glyph is missing from the font; attendee names are personal data.
logging.getLogger("fpdf").setLevel(logging.ERROR)


@dataclass(frozen=True)
class TicketPage:
    """What one printed ticket shows."""

    ticket_id: str
    order_id: str
    version: int
    code: str
    gala_title: str
    starts_at: datetime
    ends_at: datetime | None
    timezone: str
    venue_name: str
    venue_address: str | None
    ticket_type: str
    section: str | None
    general_admission: bool
    seat_label: str | None
    row: str | None
    number: int | None
    table: str | None
    attendee_name: str | None


# --- QR code ---------------------------------------------------------------------------------------


def _qr(code: str, *, box_size: int = 10) -> qrcode.QRCode:
    qr = qrcode.QRCode(error_correction=ERROR_CORRECT_M, box_size=box_size, border=QUIET_ZONE)
    qr.add_data(code)
    qr.make(fit=True)
    if qr.version > MAX_QR_VERSION:  # a code of a future, longer format must not silently get hard to scan
        raise ValueError(f"ticket code needs QR version {qr.version}, more than {MAX_QR_VERSION}")
    return qr


def qr_matrix(code: str) -> list[list[bool]]:
    """The QR modules (True is dark), quiet zone included."""
    return [list(row) for row in _qr(code).get_matrix()]


def qr_png(code: str, *, box_size: int = 10) -> bytes:
    """A black-on-white PNG, `box_size` pixels per module (about 610 px square for a ticket code)."""
    image = _qr(code, box_size=box_size).make_image(fill_color="black", back_color="white")
    out = io.BytesIO()
    image.save(out)
    return out.getvalue()


def _runs(matrix: list[list[bool]]) -> list[tuple[int, int, int]]:
    """Horizontal runs of dark modules as (x, y, length)."""
    runs = []
    for y, row in enumerate(matrix):
        x = 0
        while x < len(row):
            if row[x]:
                start = x
                while x < len(row) and row[x]:
                    x += 1
                runs.append((start, y, x - start))
            else:
                x += 1
    return runs


def qr_svg(code: str) -> bytes:
    """A compact SVG: a white square and one path of dark runs, scalable without blur."""
    matrix = qr_matrix(code)
    size = len(matrix)
    path = "".join(f"M{x} {y}h{n}v1h-{n}z" for x, y, n in _runs(matrix))
    svg = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" viewBox="0 0 {size} {size}" '
        f'width="{size * 4}mm" height="{size * 4}mm" shape-rendering="crispEdges">'
        "<title>Ticket QR code</title>"
        f'<rect width="{size}" height="{size}" fill="#ffffff"/>'
        f'<path fill="#000000" d="{path}"/>'
        "</svg>\n"
    )
    return svg.encode()


# --- dates -------------------------------------------------------------------------------------


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _clock(value: datetime) -> str:
    return f"{value.hour % 12 or 12}:{value.minute:02d} {'AM' if value.hour < 12 else 'PM'}"


def when(starts_at: datetime, ends_at: datetime | None, timezone: str) -> tuple[str, str]:
    """("Saturday, March 13, 2027", "7:00 PM – 11:30 PM EDT") in the gala's own time zone."""
    zone = _zone(timezone)
    start = starts_at.astimezone(zone)
    day = f"{start:%A}, {start:%B} {start.day}, {start.year}"
    hours = _clock(start)
    if ends_at is not None:
        end = ends_at.astimezone(zone)
        if end.date() == start.date() or (end - start).total_seconds() < 18 * 3600:
            hours += f" – {_clock(end)}"
    return day, f"{hours} {start:%Z}".strip()


def seat_parts(page: TicketPage) -> list[tuple[str, str]]:
    """The place on the ticket as (label, value) boxes: section, then row and seat, or table and seat."""
    parts: list[tuple[str, str]] = []
    if page.general_admission:
        parts.append(("ADMISSION", "General admission"))
        if page.section:
            parts.append(("AREA", page.section))
        return parts
    if page.section:
        parts.append(("SECTION", page.section))
    if page.table:
        parts.append(("TABLE", page.table))
        if page.seat_label:
            parts.append(("SEAT", page.seat_label))
    elif page.row and page.number is not None:
        parts.append(("ROW", page.row))
        parts.append(("SEAT", str(page.number)))
    elif page.seat_label:
        parts.append(("SEAT", page.seat_label))
    return parts


def seat_text(page: TicketPage) -> str:
    """One line for emails: "Orchestra · Row A · Seat 3"."""
    return " · ".join(v if k in ("ADMISSION", "SECTION", "AREA") else f"{k.title()} {v}" for k, v in seat_parts(page))


# --- PDF ---------------------------------------------------------------------------------------

_FONT_DIRS = (
    "/usr/share/fonts/truetype/dejavu",
    "/usr/share/fonts/dejavu",
    "/usr/share/fonts/TTF",
    "/usr/local/share/fonts",
    "/Library/Fonts",
)

NAVY = (27, 38, 64)
GOLD = (201, 162, 39)
INK = (33, 33, 38)
MUTED = (110, 112, 120)
PAPER = (247, 244, 236)
RULE = (205, 205, 210)


@lru_cache(maxsize=1)
def _unicode_fonts() -> tuple[str, str] | None:
    """DejaVu Sans (regular, bold) if the system has it: it covers Latin, Greek and Cyrillic names.
    Without it the PDF falls back to the PDF core font Helvetica (Latin-1 only)."""
    for folder in _FONT_DIRS:
        regular, bold = Path(folder) / "DejaVuSans.ttf", Path(folder) / "DejaVuSans-Bold.ttf"
        if regular.is_file() and bold.is_file():
            return str(regular), str(bold)
    return None


_LATIN1_SUBSTITUTES = str.maketrans({"–": "-", "—": "-", "’": "'", "‘": "'", "“": '"', "”": '"', "…": "..."})


def _latin1(text: str) -> str:
    text = text.translate(_LATIN1_SUBSTITUTES)
    out = []
    for char in text:
        try:
            char.encode("latin-1")
            out.append(char)
        except UnicodeEncodeError:
            base = unicodedata.normalize("NFKD", char).encode("latin-1", "ignore").decode("latin-1")
            out.append(base or "?")
    return "".join(out)


class _TicketPDF(FPDF):
    def __init__(self) -> None:
        super().__init__(orientation="portrait", unit="mm", format="letter")
        self.set_auto_page_break(auto=False)
        self.set_margins(18, 18, 18)
        fonts = _unicode_fonts()
        self.unicode = fonts is not None
        if fonts is not None:
            self.add_font("Sans", "", fonts[0])
            self.add_font("Sans", "B", fonts[1])
            self.family = "Sans"
        else:
            self.family = "Helvetica"

    def t(self, text: str) -> str:
        return text if self.unicode else _latin1(text)

    def font(self, size: float, *, bold: bool = False, color: tuple[int, int, int] = INK, spacing: float = 0) -> None:
        self.set_font(self.family, "B" if bold else "", size)
        self.set_text_color(*color)
        self.set_char_spacing(spacing)

    def lines(self, text: str, width: float, max_lines: int) -> list[str]:
        """Wrap to `width`; an overflowing last line ends with an ellipsis."""
        words, lines, current = self.t(text).split(), [], ""
        for word in words:
            candidate = f"{current} {word}".strip()
            if self.get_string_width(candidate) <= width or not current:
                current = candidate
            else:
                lines.append(current)
                current = word
        if current:
            lines.append(current)
        if len(lines) > max_lines:
            lines = lines[:max_lines]
            lines[-1] += " …" if self.unicode else " ..."
        ellipsis = "…" if self.unicode else "..."
        for i, line in enumerate(lines):
            while self.get_string_width(line) > width and len(line) > 1:
                line = line[:-2] + ellipsis
            lines[i] = line
        return lines

    def label(self, x: float, y: float, text: str, *, color: tuple[int, int, int] = MUTED) -> None:
        self.font(7, bold=True, color=color, spacing=1.2)
        self.text(x, y, self.t(text))

    def qr(self, code: str, x: float, y: float, size: float) -> None:
        """The code as vector squares: sharp at any zoom and on any printer."""
        matrix = qr_matrix(code)
        module = size / len(matrix)
        self.set_fill_color(255, 255, 255)
        self.rect(x, y, size, size, style="F")
        self.set_fill_color(0, 0, 0)
        for mx, my, n in _runs(matrix):
            # A hair of overlap so that no white seams appear between neighbouring runs.
            self.rect(x + mx * module, y + my * module, n * module + 0.02, module + 0.02, style="F")


def _page(pdf: _TicketPDF, page: TicketPage) -> None:
    pdf.add_page()
    left, top, width = 18.0, 18.0, pdf.w - 36.0
    right = left + width
    band, pad = 36.0, 9.0
    qr_size = 62.0
    qr_x, qr_y = right - pad - qr_size, top + band + 9
    col_x, col_w = left + pad, qr_x - left - 2 * pad
    day, hours = when(page.starts_at, page.ends_at, page.timezone)

    # The card's body first (its height depends on how the texts wrap), then the card behind it:
    # fpdf2 draws in order, so the text goes on a second pass over the background.
    def body(draw: bool) -> float:
        put = pdf.text if draw else (lambda x, y, text: None)  # noqa: ARG005
        y = top + band + 13
        if draw:
            pdf.label(col_x, y, "GUEST")
        pdf.font(19, bold=True)
        for line in pdf.lines(page.attendee_name or "Name to be confirmed", col_w, 2):
            y += 8
            put(col_x, y, line)
        y += 11
        if draw:
            pdf.label(col_x, y, "TICKET")
        pdf.font(12.5)
        for line in pdf.lines(page.ticket_type, col_w, 2):
            y += 6
            put(col_x, y, line)
        y += 10
        if draw:
            pdf.label(col_x, y, "WHEN")
        pdf.font(11.5, bold=True)
        y += 6
        put(col_x, y, pdf.lines(day, col_w, 1)[0])
        pdf.font(11)
        y += 5.5
        put(col_x, y, pdf.lines(hours, col_w, 1)[0])
        y += 10
        if draw:
            pdf.label(col_x, y, "WHERE")
        pdf.font(11.5, bold=True)
        for line in pdf.lines(page.venue_name, col_w, 2):
            y += 6
            put(col_x, y, line)
        if page.venue_address:
            pdf.font(10, color=MUTED)
            for line in pdf.lines(page.venue_address, col_w, 2):
                y += 5
                put(col_x, y, line)
        return y

    parts = seat_parts(page)
    box_h, gap = 20.0, 4.0
    box_y = max(body(draw=False) + 9, qr_y + qr_size + 11)
    card = (box_y + (box_h if parts else 0) + pad) - top

    # The card and its dark header band.
    pdf.set_draw_color(*RULE)
    pdf.set_line_width(0.3)
    pdf.set_fill_color(255, 255, 255)
    pdf.rect(left, top, width, card, style="DF", round_corners=True, corner_radius=4)
    pdf.set_fill_color(*NAVY)
    pdf.rect(left, top, width, band, style="F", round_corners=True, corner_radius=4)
    pdf.rect(left, top + band - 5, width, 5, style="F")  # square off the band's lower corners
    pdf.set_fill_color(*GOLD)
    pdf.rect(left, top + band, width, 1.2, style="F")

    pdf.label(left + pad, top + 9, "ADMIT ONE", color=GOLD)
    title_width = width - 2 * pad
    for size in (22, 20, 18, 16):
        pdf.font(size, bold=True, color=(255, 255, 255))
        if pdf.get_string_width(pdf.t(page.gala_title)) <= title_width:
            break
    title = pdf.lines(page.gala_title, title_width, 2)
    line_h = pdf.font_size * 1.15
    y = top + (20 if len(title) == 1 else 16.5)
    for line in title:
        pdf.text(left + pad, y, line)
        y += line_h
    pdf.font(10.5, color=(226, 214, 178))
    pdf.text(left + pad, top + band - 5, pdf.t(f"{day}  ·  {hours}"))

    # Left column: guest, ticket, when, where. Right column: the code and the ticket's reference.
    body(draw=True)
    pdf.qr(page.code, qr_x, qr_y, qr_size)
    pdf.font(7.5, color=MUTED)
    ref = f"{page.ticket_id} · v{page.version}"
    pdf.text(qr_x + (qr_size - pdf.get_string_width(pdf.t(ref))) / 2, qr_y + qr_size + 5, pdf.t(ref))

    # The place, in boxes across the card.
    if parts:
        box_w = (width - 2 * pad - gap * (len(parts) - 1)) / len(parts)
        for i, (name, value) in enumerate(parts):
            x = left + pad + i * (box_w + gap)
            pdf.set_fill_color(*PAPER)
            pdf.rect(x, box_y, box_w, box_h, style="F", round_corners=True, corner_radius=2.5)
            pdf.label(x + 4, box_y + 6.5, name)
            for size in (16, 14, 12, 10):
                pdf.font(size, bold=True)
                if pdf.get_string_width(pdf.t(value)) <= box_w - 8:
                    break
            pdf.text(x + 4, box_y + 15.5, pdf.lines(value, box_w - 8, 1)[0])

    # Below the card: the stub, cut along the dashes.
    stub = top + card + 8
    pdf.set_draw_color(*RULE)
    pdf.set_dash_pattern(dash=1.5, gap=1.5)
    pdf.line(left, stub, right, stub)
    pdf.set_dash_pattern()
    pdf.font(9, bold=True)
    pdf.text(left, stub + 9, pdf.t(f"Order {page.order_id}"))
    pdf.font(9, color=MUTED)
    pdf.set_xy(left, stub + 12)
    pdf.c_margin = 0
    pdf.multi_cell(
        width,
        4.6,
        pdf.t(
            "Show this page at the door, printed or on your phone: the code admits one guest, once. "
            "Keep it to yourself, as whoever shows it first is let in. If the ticket is transferred, "
            "this code stops working and the new holder receives a new one."
        ),
    )


def tickets_pdf(pages: Sequence[TicketPage], *, title: str | None = None) -> bytes:
    """One page per ticket."""
    pdf = _TicketPDF()
    pdf.set_title(pdf.t(title or (pages[0].gala_title if pages else "Tickets")))
    pdf.set_creator("tickets")
    pdf.set_author("tickets")
    for page in pages:
        _page(pdf, page)
    return bytes(pdf.output())
