"""Check-in problems. A scan's verdict (admitted, void, ...) is never a problem: it is a 200 answer."""

from tickets.problems import Conflict, NotFound


class ScanNotFound(NotFound):
    code, title = "scan_not_found", "Scan not found"


class NotAnAdmission(Conflict):
    code, title = "scan_not_admission", "Only an admission can be undone"


class ScanAlreadyUndone(Conflict):
    code, title = "scan_already_undone", "This admission was already undone"


class AdmissionSuperseded(Conflict):
    code, title = "admission_superseded", "This admission no longer counts"


class AmbiguousScanId(Conflict):
    code, title = "scan_id_ambiguous", "This scan id exists at several galas"
