"""`convergent console`: a small read-only web console of a running server (Starlette + Jinja2,
pages rendered on the server, plots as inline SVG; no JavaScript).

It is a gRPC client of the server (the SDK), calling with the API key it was started with, so it
shows exactly what that key may see: a reader key gets every page but the audit log, which the
server answers PERMISSION_DENIED (shown as such). Loopback only by default.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from datetime import datetime, timezone

from jinja2 import DictLoader, Environment, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from convergent.client import Client, Usage, errors
from convergent.server.console_pages import TEMPLATES

NAV = [("/", "overview"), ("/models", "models & anchors"), ("/fits", "fits"), ("/atlas", "atlas"),
       ("/galleries", "galleries"), ("/audit", "audit log")]


def _num(value: object, style: str = ".3f") -> str:
    """A number as the console shows it ("—" when there is none)."""
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        return "—"
    return format(float(value), style)


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _svg(draw: Callable[[io.BytesIO], object]) -> str:
    out = io.BytesIO()
    draw(out)
    text = out.getvalue().decode()
    return text[text.index("<svg"):]  # inline: without the XML prolog and doctype


def make_app(client: Client, server: str) -> Starlette:
    """The console's pages over ``client`` (a connected SDK client of ``server``)."""
    env = Environment(loader=DictLoader(TEMPLATES), autoescape=select_autoescape(default=True))
    env.filters["num"] = _num
    env.filters["utc"] = _utc

    def page(name: str, active: str, title: str, status: int = 200, **values: object) -> HTMLResponse:
        try:
            known = values.get("usage")  # the overview has read it already
            usage = known if isinstance(known, Usage) else client.usage()
            who = f"tenant {usage.tenant}, {usage.role} key {usage.key_id or '(authentication off)'}"
        except errors.ConvergentError:
            who = "key not accepted"
        html = env.get_template(name).render(nav=NAV, active=active, title=title, server=server, who=who, **values)
        return HTMLResponse(html, status_code=status)

    def guarded(active: str, title: str, render: Callable[[Request], HTMLResponse]) -> Callable[[Request], HTMLResponse]:
        def endpoint(request: Request) -> HTMLResponse:
            try:
                return render(request)
            except errors.ConvergentError as exc:
                code = exc.code.name
                status = {"PERMISSION_DENIED": 403, "UNAUTHENTICATED": 401, "NOT_FOUND": 404,
                          "INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 409}.get(code, 502)
                hint = {403: "This page needs an admin key: start the console with --api-key of an admin.",
                        401: "Start the console with a valid --api-key.",
                        502: f"Is the server at {server} running? (`convergent health --address {server}`)"}.get(status, "")
                return page("error", active, title, status, code=code, message=exc.details, hint=hint)
        return endpoint

    def overview(request: Request) -> HTMLResponse:
        return page("overview", "/", "Overview", info=client.server_info(), healthy=client.health(), usage=client.usage(),
                    n_models=len(client.list_models()), n_sets=len(client.list_anchor_sets()),
                    n_fits=len(client.list_fits()), n_galleries=len(client.list_galleries()))

    def models(request: Request) -> HTMLResponse:
        sets = client.list_anchor_sets()
        overlap = {}
        for s in sets:
            atlas = client.atlas(s.name)
            overlap[s.name] = {(e.source, e.target): e.n_pairs for e in atlas.entries}
        return page("models", "/models", "Models and anchor sets", models=client.list_models(), sets=sets, overlap=overlap)

    def fits(request: Request) -> HTMLResponse:
        return page("fits", "/fits", "Fits", fits=sorted(client.list_fits(), key=lambda f: f.created_at, reverse=True))

    def atlas_index(request: Request) -> HTMLResponse:
        sets = client.list_anchor_sets()
        if not sets:
            return page("error", "/atlas", "Atlas", 404, code="NOT_FOUND", message="no anchor sets yet",
                        hint="Upload anchors of two models to one set, then come back.")
        return atlas_of(request, sets[0].name)

    def atlas_of(request: Request, name: str | None = None) -> HTMLResponse:
        name = name or request.path_params["name"]
        result = client.atlas(name)
        top1 = {(e.source, e.target): e.top1 for e in result.entries if e.current}
        marks = {(e.source, e.target): "stale" for e in result.entries if e.stale}
        heatmap = ""
        if result.entries:
            from convergent.server.report import plot_atlas

            heatmap = _svg(lambda out: plot_atlas(result.models, top1, out, f"{name}: held-out top-1 of each route",
                                                  marks, fmt="svg"))
        return page("atlas", "/atlas", f"Atlas of {name}", atlas=result, heatmap=heatmap, missing=len(result.missing()))

    def galleries(request: Request) -> HTMLResponse:
        current = [f for f in client.list_fits() if f.source and f.target and not f.stale]
        found = client.list_galleries()
        routes = {g.name: sorted({f.source for f in current if f.target == g.model}) for g in found}
        return page("galleries", "/galleries", "Galleries", galleries=found, routes=routes)

    def verification(request: Request) -> HTMLResponse:
        a, b = request.query_params.get("a", ""), request.query_params.get("b", "")
        report = client.verification_report(a, b)
        from convergent.server.report import plot_operating_points

        det = _svg(lambda out: plot_operating_points([(p.far, p.tar) for p in report.points], report.eer, out,
                                                     f"verification {a} vs {b}"))
        return page("verification", "/galleries", f"Verification {a} vs {b}", report=report, det=det)

    def audit(request: Request) -> HTMLResponse:
        return page("audit", "/audit", "Audit log", entries=client.audit_log(200))

    routes = [Route("/", guarded("/", "Overview", overview)), Route("/models", guarded("/models", "Models", models)),
              Route("/fits", guarded("/fits", "Fits", fits)), Route("/atlas", guarded("/atlas", "Atlas", atlas_index)),
              Route("/atlas/{name}", guarded("/atlas", "Atlas", atlas_of)),
              Route("/galleries", guarded("/galleries", "Galleries", galleries)),
              Route("/verification", guarded("/galleries", "Verification", verification)),
              Route("/audit", guarded("/audit", "Audit log", audit))]
    return Starlette(routes=routes)
