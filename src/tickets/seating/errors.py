from tickets.problems import Conflict, NotFound


class SectionNotFound(NotFound):
    code, title = "section_not_found", "Section not found"


class SeatNotFound(NotFound):
    code, title = "seat_not_found", "Seat not found"


class DuplicateLabel(Conflict):
    code, title = "duplicate_label", "A seat or table label is already used in this gala"


class DuplicateSectionName(Conflict):
    code, title = "duplicate_section_name", "A section of this gala already has that name"


class InventoryInUse(Conflict):
    code, title = "inventory_in_use", "Held or sold inventory cannot be changed that way"


class SectionInUse(Conflict):
    code, title = "section_in_use", "A ticket type still sells from this section"


class WrongSectionKind(Conflict):
    code, title = "wrong_section_kind", "The section is of the other kind"
