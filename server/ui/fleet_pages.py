"""Fleet pages: agents' health and addresses (with revocation for admins) and the vendors overview.

Both show only what the viewer's scope allows (the store functions filter): a scoped reviewer or a
vendor lead sees their vendors' agents and figures, and an agent of another vendor is not found.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from server.api.deps import AddressDep, CollectorDep
from server.store import agents, audit, stats, vendors
from server.ui.charts import STACK_ORDER, stacked_days
from server.ui.render import UiRoute, redirect, render
from server.ui.session import AdminDep, AdminPosterDep, ViewerDep

router = APIRouter(prefix="/ui", route_class=UiRoute, include_in_schema=False)
_AgentId = Annotated[str, Path(max_length=64)]
WINDOWS = (7, 30, 90)


@router.get("/agents")
def agent_list(
    request: Request,
    collector: CollectorDep,
    viewer: ViewerDep,
    vendor: Annotated[str | None, Query(max_length=128)] = None,
    status: Annotated[str | None, Query(pattern="^(online|offline|revoked)?$")] = None,
) -> Response:
    collector.liveness.flush()  # this collector's own buffered liveness shows at once (server/liveness.py)
    with collector.db.read() as conn:
        items = agents.list_agents(conn, vendor=vendor or None, status=status or None, scope=viewer.user.scope)
        vendor_names = [v["name"] for v in vendors.list_visible(conn, scope=viewer.user.scope)]
    counts = {name: sum(1 for a in items if a["status"] == name) for name in ("online", "offline", "revoked")}
    notice = "Agent revoked: its calls are refused from now on." if request.query_params.get("notice") == "revoked" else None
    problems = {a["id"]: source_problems(a["sources"]) for a in items}
    context = {
        "items": items, "vendor": vendor or "", "status": status or "", "vendor_names": vendor_names, "counts": counts, "notice": notice,
        "problems": problems,
    }  # fmt: skip
    return render(request, "agents.html", context)


def source_problems(sources: Any) -> list[str]:
    """One line per part of an agent that its last heartbeat did not report healthy.

    The report is the agent's (a source's state, or for a thread that died ``{"state", "deaths",
    "last_error"}``), so every value is read defensively and shown as text, never trusted in shape.
    """
    if not isinstance(sources, dict):
        return []
    lines = []
    for name, report in sources.items():
        entry = report if isinstance(report, dict) else {"state": report}
        state = str(entry.get("state", "ok"))
        deaths = entry.get("deaths")
        if state == "ok" and not deaths:
            continue
        line = f"{name}: {state}"
        if deaths:
            line += f", died {deaths} time(s): {str(entry.get('last_error', ''))[:200]}"
        lines.append(line)
    return lines


@router.get("/agents/{agent_id}/revoke")
def revoke_confirm(agent_id: _AgentId, request: Request, collector: CollectorDep, viewer: AdminDep) -> Response:
    with collector.db.read() as conn:
        agent = agents.get(conn, agent_id=agent_id, scope=viewer.user.scope)
    return render(request, "agent_revoke.html", {"agent": agent})


@router.post("/agents/{agent_id}/revoke")
def revoke(agent_id: _AgentId, collector: CollectorDep, viewer: AdminPosterDep, address: AddressDep) -> Response:
    now = collector.clock()
    with collector.db.write() as conn:
        agents.revoke(conn, agent_id=agent_id, now=now)
        audit.append(conn, actor=viewer.user.name, action="agent.revoke", target=agent_id, details={"via": "ui"}, address=address, now=now)
    return redirect("/ui/agents?notice=revoked")


@router.get("/vendors")
def vendor_overview(request: Request, collector: CollectorDep, viewer: ViewerDep, days: Annotated[int, Query(ge=1, le=stats.MAX_WINDOW_DAYS)] = 30) -> Response:
    with collector.db.read() as conn:
        figures = stats.vendor_overview(conn, now=collector.clock(), days=days, scope=viewer.user.scope, pseudonyms=collector.pseudonyms)
    sections = [{"stats": s, "chart": stacked_days(s.days, s.per_day)} for s in figures]
    since = figures[0].days[0] if figures else stats.window_start(collector.clock(), days)
    context = {"sections": sections, "days": days, "windows": WINDOWS, "severities": STACK_ORDER, "since": since.isoformat()}
    return render(request, "vendors.html", context)
