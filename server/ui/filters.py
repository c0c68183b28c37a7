"""The event list's view in the URL: filters, sort and page size read from the query string.

Everything that shapes a list lives in its URL, so a view can be bookmarked or sent to a
colleague. A value that cannot be used is reported on the page (and left out), never a 500.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlencode

from agent.events import CHANNELS, SEVERITIES
from server.store.cursors import SORTS
from server.store.review import TRIAGE_STATUSES, EventFilter

PAGE_SIZES = (25, 50, 100, 200)
# The severity menu, most severe first: each level alone, and "or above" for those in between.
SEVERITY_CHOICES = [
    choice
    for rank in reversed(range(len(SEVERITIES)))
    for choice in (
        *([(",".join(SEVERITIES[rank:]), f"{SEVERITIES[rank].title()} or above")] if 0 < rank < len(SEVERITIES) - 1 else []),
        (SEVERITIES[rank], SEVERITIES[rank].title()),
    )
]
DEFAULT_LIMIT = 50
TEXT_FILTERS = ("vendor", "agent", "user", "rule", "sha256", "device", "process", "destination")
FIELDS = ("since", "until", "vendor", "agent", "user", "channel", "rule", "severity", "status", "sha256", "device", "process", "destination")
_MAX_TEXT = 255
_FIELD_NAMES = {"device": "device_serial", "process": "process_name"}


@dataclass
class ListView:
    """One event list as the URL describes it."""

    params: dict[str, str] = field(default_factory=dict)
    """The filters in use, as they go back into URLs (no sort, limit or cursor)."""
    filters: EventFilter = field(default_factory=EventFilter)
    sort: str = "newest"
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None
    problems: list[str] = field(default_factory=list)

    def query(self, **changes: str | int | None) -> str:
        """This view's query string with ``changes`` applied (None removes a key)."""
        values: dict[str, str | int | None] = {**self.params}
        if self.sort != "newest":
            values["sort"] = self.sort
        if self.limit != DEFAULT_LIMIT:
            values["limit"] = self.limit
        values.update(changes)
        # One spelling per view: filters in FIELDS order, then sort, page size and cursor.
        order = {name: index for index, name in enumerate(FIELDS + ("sort", "limit", "cursor", "notice"))}
        pairs: list[tuple[str, str | int | None]] = [(k, v) for k, v in values.items() if v not in (None, "")]
        pairs.sort(key=lambda item: order.get(item[0], len(order)))
        return urlencode(pairs)

    def url(self, **changes: str | int | None) -> str:
        query = self.query(**changes)
        return "/ui/events" + (f"?{query}" if query else "")

    @property
    def filtered(self) -> bool:
        return bool(self.params)


def parse_time(text: str) -> datetime:
    """A moment from a form: ``2026-11-24T09:00`` (a browser's datetime-local, read as UTC),
    a date alone (its midnight, UTC), or ISO 8601 with a zone."""
    moment = datetime.fromisoformat(text.strip())
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    moment.astimezone(UTC)  # raises OverflowError for times outside datetime's range in UTC
    return moment


def _choices(name: str, raw: str, allowed: tuple[str, ...], problems: list[str]) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    bad = [item for item in items if item not in allowed]
    if bad:
        problems.append(f"{name} must be among {', '.join(allowed)}; ignored {', '.join(bad)[:100]}")
    return tuple(item for item in items if item in allowed)


def parse(query: Mapping[str, str]) -> ListView:
    view = ListView()
    problems = view.problems
    values: dict[str, object] = {}
    for name in TEXT_FILTERS:
        text = (query.get(name) or "").strip()
        if len(text) > _MAX_TEXT:
            problems.append(f"{name} is longer than {_MAX_TEXT} characters; ignored")
        elif text:
            view.params[name] = text
    values.update({_FIELD_NAMES.get(name, name): view.params[name] for name in TEXT_FILTERS if name in view.params and name != "destination"})
    if "destination" in view.params:  # egress hosts, comma-separated as in the API
        values["destination_hosts"] = tuple(part.strip() for part in view.params["destination"].split(",") if part.strip())
    for name, allowed, target in (("channel", CHANNELS, "channels"), ("severity", SEVERITIES, "severities"), ("status", TRIAGE_STATUSES, "statuses")):
        chosen = _choices(name, query.get(name) or "", allowed, problems)
        if chosen:
            view.params[name] = ",".join(chosen)
            values[target] = chosen
    for name in ("since", "until"):
        text = (query.get(name) or "").strip()
        if not text:
            continue
        try:
            values[name] = parse_time(text[:64])
            view.params[name] = text[:64]
        except (ValueError, OverflowError):
            problems.append(f"{name}: {text[:40]!r} is not a time like 2026-11-24T09:00 (UTC)")
    view.filters = EventFilter(**values)  # type: ignore[arg-type]
    sort = query.get("sort") or "newest"
    if sort in SORTS:
        view.sort = sort
    else:
        problems.append(f"sort must be one of {', '.join(SORTS)}")
    limit = query.get("limit") or ""
    if limit:
        if limit.isdigit() and int(limit) in PAGE_SIZES:
            view.limit = int(limit)
        else:
            problems.append(f"page size must be one of {', '.join(map(str, PAGE_SIZES))}")
    cursor = query.get("cursor") or ""
    view.cursor = cursor[:128] or None
    return view
