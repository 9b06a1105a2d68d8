"""The dashboard's pages: server-rendered Jinja2 (templates/), a little JavaScript of our own (static/).

    /            Overview: each queue's counts, rate, model and batch size; live (polls /api/status)
    /results     recent results as before/after thumbnails, paged; /results/{id} compares them full size
    /failed      failed inputs with their reasons, 100 a page: Retry, Delete
    /models      per queue the versions and scores, the champion marked, report pictures: Promote, Roll back
    /training    pairs, halves waiting, the next run, the last run's decision and report: Train now
    /upload      drop files into a queue
    /login       the token, once; the session cookie keeps it

A form's POST carries the session's CSRF token (checked here) and comes from
this server's own origin (checked by security.Guard); it answers 303 back to
its page, with what happened said once at the top.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from datetime import datetime
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from . import actions
from .api import who
from .files import ID
from .listing import page_size
from .ondisk import Refused
from .security import COOKIE, client_address, csrf_ok, same_token, set_cookie
from .thumbs import Unreadable, thumbnail, viewable

HERE = Path(__file__).parent
PER_PAGE = 24
FAILED_PER_PAGE = 100
NAV = [("/", "Overview"), ("/results", "Results"), ("/failed", "Failed"), ("/models", "Models"),
       ("/training", "Training"), ("/upload", "Upload")]


def _when(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def _num(x, spec=".2f") -> str:
    return format(x, spec) if isinstance(x, (int, float)) and math.isfinite(x) else "-"


def _page_no(request: Request) -> int:
    try:
        return max(0, int(request.query_params.get("page", "0")))
    except ValueError:
        return 0


def static_urls(folder: Path = HERE / "static") -> dict[str, str]:
    """Each static file's URL with its content's hash (?v=): an upgrade changes the URL, so a browser never
    pairs a new page with an old script it kept, and may keep each version for good (security.Guard)."""
    return {f.name: f"/static/{f.name}?v={hashlib.sha256(f.read_bytes()).hexdigest()[:12]}"
            for f in sorted(folder.iterdir()) if f.is_file()}


def routes(ctx, sessions, misses) -> tuple[list[Route], callable]:
    """The pages' routes, and the login page (security.Guard answers 401 with it); misses: the wrong tokens
    per address (security.Misses), which the Bearer header and /login share."""
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters.update(when=_when, num=_num)
    templates.env.globals["static"] = static_urls().__getitem__

    def page(request: Request, name: str, status: int = 200, **context) -> Response:
        s = getattr(request.state, "session", None)
        flash = ""
        if s is not None:
            flash, s.flash = getattr(s, "flash", ""), ""
        return templates.TemplateResponse(request, name, {
            "nav": NAV, "path": request.url.path, "csrf": s.csrf if s else "", "flash": flash,
            "token_set": bool(ctx.cfg.web.token), "queues": list(ctx.cfg.queues), "paths": ctx.cfg.paths,
            "limits": ctx.cfg.limits, **context}, status_code=status)

    def login_page(request: Request, status: int = 200, error: str = "") -> Response:
        return page(request, "login.html", status, error=error)

    def back(request: Request, to: str, said: str) -> Response:
        s = getattr(request.state, "session", None)
        if s is not None:
            s.flash = said
        return RedirectResponse(to, 303)

    async def form_action(request: Request, to: str, act) -> Response:
        """A page's button: the CSRF field checked, the action run, back to the page with what it said."""
        form = await request.form()
        if not csrf_ok(request, form.get("csrf")):
            return Response("missing or wrong CSRF token: reload the page and try again\n", 403,
                            media_type="text/plain")
        try:
            said = await run_in_threadpool(act)
        except Refused as e:
            said = f"Not done: {e}"
        return back(request, to, said)

    # -- pages --

    async def overview(request):
        try:
            doc = await run_in_threadpool(actions.status, ctx.cfg)
        except Refused as e:
            doc, why = {}, str(e)
        else:
            why = ""
        return page(request, "overview.html", doc=doc, why=why)

    async def results(request):
        n = _page_no(request)
        rows, total = ctx.index.done(n, PER_PAGE)
        return page(request, "results.html", rows=rows, page_no=n, pages=max(1, -(-total // PER_PAGE)),
                    total=total)

    async def compare(request):
        rid = request.path_params["id"]
        rec = ctx.index.records.get(rid) if ID.match(rid) else None
        if rec is None or rec["state"] != "done":
            return page(request, "missing.html", 404)
        q = ctx.cfg.queues.get(rec["queue"])
        return page(request, "compare.html", rec=rec, has_before=bool(rec.get("kept")) and
                    ctx.cfg.output.keep_inputs, points=q is not None and q.task == "colorize")

    async def failed(request):
        n, per = _page_no(request), page_size(ctx.index, FAILED_PER_PAGE)
        rows, total = await run_in_threadpool(ctx.index.failed, n * per, per)
        return page(request, "failed.html", rows=rows, page_no=n, pages=max(1, -(-total // per)), total=total)

    async def retry(request):
        rid = request.path_params["id"]

        def act():
            rec = ctx.index.retry(rid if ID.match(rid) else "")
            return f"{rec['name']} is back in the {rec['queue']} inbox"
        return await form_action(request, "/failed", act)

    async def delete(request):
        rid = request.path_params["id"]

        def act():
            ctx.index.delete(rid if ID.match(rid) else "")
            return "deleted"
        return await form_action(request, "/failed", act)

    async def models(request):
        tables = await run_in_threadpool(lambda: {q: actions.models(ctx.cfg, q) for q in ctx.cfg.queues})
        return page(request, "models.html", tables=tables)

    async def promote(request):
        p = request.path_params
        return await form_action(request, "/models", lambda: actions.promote(ctx.cfg, p["queue"], p["version"],
                                                                             who(request)))

    async def rollback(request):
        q = request.path_params["queue"]
        return await form_action(request, "/models", lambda: actions.rollback(ctx.cfg, q, who(request)))

    async def training(request):
        try:
            doc = await run_in_threadpool(actions.status, ctx.cfg)
        except Refused:
            doc = None
        return page(request, "training.html", t=await run_in_threadpool(actions.training, ctx.cfg, doc, ctx.train),
                    tasks={q: s.task for q, s in ctx.cfg.queues.items()})

    async def train(request):
        q = request.path_params["queue"]

        def act():
            if q not in ctx.cfg.queues or ctx.train is None:
                raise Refused(404, f"no queue {q!r}")
            return ctx.train.start(q, who(request))
        return await form_action(request, "/training", act)

    async def upload(request):
        return page(request, "upload.html")

    # -- pictures, by id --

    async def picture(request, make, folder: str):
        """A done file's input (before) or result (after), by id, through make (thumbnail or viewable)."""
        rid, which = request.path_params["id"], request.path_params["which"]
        opener = {"before": ctx.index.before, "after": ctx.index.result}.get(which)
        opened = await run_in_threadpool(opener, rid) if opener and ID.match(rid) else None
        if opened is None:
            return Response(status_code=404)
        try:
            got = await run_in_threadpool(make, ctx.cfg.paths.state / "web" / folder, f"{rid}-{which}", opened,
                                          ctx.cfg.limits.max_pixels, ctx.memory)
        except Unreadable:
            return Response(status_code=404)
        got, media = got if isinstance(got, tuple) else (got, "image/jpeg")
        return FileResponse(got, media_type=media) if isinstance(got, Path) else Response(got, media_type=media)

    async def thumb(request):
        return await picture(request, thumbnail, "thumbs")

    async def full(request):
        return await picture(request, viewable, "full")

    async def version_png(request):
        p = request.path_params
        png = await run_in_threadpool(actions.version_report, ctx.cfg, p["queue"], p["version"]) \
            if p["queue"] in ctx.cfg.queues else None
        return FileResponse(png, media_type="image/png") if png else Response(status_code=404)

    async def run_png(request):
        p = request.path_params
        png = await run_in_threadpool(actions.run_report, ctx.cfg, p["queue"], p["run"])
        return FileResponse(png, media_type="image/png") if png else Response(status_code=404)

    # -- login --

    async def login(request):
        if not ctx.cfg.web.token:
            return RedirectResponse("/", 303)
        if request.method == "GET":
            return login_page(request)
        addr = client_address(request)
        locked = misses.locked(addr)
        if not locked:
            form = await request.form()
            if same_token(str(form.get("token", "")), ctx.cfg.web.token):
                misses.hit(addr)
            else:
                locked = misses.miss(addr)
                if not locked:
                    await asyncio.sleep(0.2)   # a guesser waits, as on the Bearer path
                    return login_page(request, 401, "That is not the token in [web] token.")
        if locked:
            response = login_page(request, 429, f"Too many wrong tokens from this address: try again in "
                                                f"{locked} s.")
            response.headers["Retry-After"] = str(locked)
            return response
        sid, request.state.session = sessions.new(ctx.cfg.web.token)
        response = RedirectResponse("/", 303)
        set_cookie(response, request, sid)
        return response

    async def icon(request):
        return RedirectResponse("/static/favicon.svg", 301)   # asked for by pages without a <link rel=icon>

    async def logout(request):
        sessions.drop(request.cookies.get(COOKIE))
        response = RedirectResponse("/login" if ctx.cfg.web.token else "/", 303)
        response.delete_cookie(COOKIE, path="/")
        return response

    table = [
        ("/", overview, ["GET"]), ("/results", results, ["GET"]), ("/results/{id}", compare, ["GET"]),
        ("/failed", failed, ["GET"]), ("/failed/{id}/retry", retry, ["POST"]),
        ("/failed/{id}/delete", delete, ["POST"]),
        ("/models", models, ["GET"]), ("/models/{queue}/{version:int}/promote", promote, ["POST"]),
        ("/models/{queue}/rollback", rollback, ["POST"]),
        ("/models/{queue}/{version:int}/report.png", version_png, ["GET"]),
        ("/training", training, ["GET"]), ("/training/{queue}/train", train, ["POST"]),
        ("/reports/{queue}/{run}/report.png", run_png, ["GET"]),
        ("/upload", upload, ["GET"]),
        ("/thumbs/{id}/{which}.jpg", thumb, ["GET"]), ("/view/{id}/{which}", full, ["GET"]),
        ("/login", login, ["GET", "POST"]), ("/logout", logout, ["POST"]), ("/favicon.ico", icon, ["GET"]),
    ]
    return [Route(path, fn, methods=methods) for path, fn, methods in table], login_page
