"""The HTTP API: JSON routes under /api/ (docs/service.md, "The API", has a curl line for each).

    GET  /api/status                                   status.json, as `reverser status --json` prints it
    POST /api/queues/{queue}/files                     multipart field "file" (and optional "hints", the
                                                       color points' JSON) -> 202 {"id", "url"}
    GET  /api/files/{id}                               {"state": waiting|working|done|failed|unknown,
                                                        "result"|"reason"} (unknown: finished before a crash,
                                                        not found again after it; the reason says what was)
    GET  /api/files/{id}/result                        the result's bytes
    POST /api/files/{id}/retry, /api/files/{id}/delete a failed input back into the inbox, or removed
    POST /api/files/{id}/hints                         {"points": [...]}: a done file colored again, full
                                                       size, as a new file -> 202 {"id", "url"} (recolor.py)
    POST /api/files/{id}/preview                       {"points": [...]}: its working-size PNG with them
    GET  /api/results?page=N                           the results, 24 a page, newest first, and how many
    GET  /api/failed?offset=N&limit=M                  failed inputs, newest first (limit 100, at most 500),
                                                       and how many in all ("total")
    GET  /api/inbox/left-alone                         per queue the files the inbox leaves alone (a wrong
                                                       name, a format not read), each with why and the fix
    GET  /api/queues/{queue}/models                    versions and scores, the champion marked
    POST /api/queues/{queue}/models/{version}/promote, /api/queues/{queue}/models/rollback
    GET  /api/training, POST /api/queues/{queue}/train

Blocking work (files, the registry) runs in Starlette's thread pool, never on the event loop.
"""

from __future__ import annotations

import mimetypes
import os
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from . import actions
from .files import ID
from .hints import checked
from .listing import PAGE, page_size
from .ondisk import Opened, Refused

UPLOAD_SLACK = 1 << 16     # multipart headers and boundaries around the file's bytes
HINTS_MAX = 1 << 20        # a hints body: some 20 000 points


class TooLarge(Exception):
    pass


def who(request: Request) -> str:
    """The name a registry change is recorded under."""
    return f"web ({request.client.host if request.client else '?'})"


def file_id(request: Request) -> str:
    rid = request.path_params["id"]
    if not ID.match(rid):
        raise Refused(404, "no such file")
    return rid


async def body(request: Request, limit: int) -> bytes:
    """A request's body, refused (413) past limit bytes, whether it says its length or not."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise Refused(413 if length.isdigit() else 400, f"a body of at most {limit} bytes is expected")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise Refused(413, f"a body of at most {limit} bytes is expected")
    return bytes(data)


def number(request: Request, key: str, default: int) -> int:
    """A query parameter that is a count (offset=, limit=, page=); 400 when it is not one."""
    value = request.query_params.get(key, str(default))
    if not value.isdigit():
        raise Refused(400, f"{key} must be a number of 0 or more")
    return int(value)


def stream(opened: Opened, disposition: str = "inline", media: str | None = None) -> StreamingResponse:
    """A file the service wrote, streamed from its open descriptor (closed at the end)."""
    def chunks():
        with os.fdopen(opened.fd, "rb") as f:
            while block := f.read(1 << 20):
                yield block

    media = media or mimetypes.guess_type(opened.name)[0] or "application/octet-stream"
    return StreamingResponse(chunks(), media_type=media, headers={
        "Content-Length": str(opened.size),
        "Content-Disposition": f"{disposition}; filename*=UTF-8''{quote(opened.name, safe='')}"})


def answers(handler):
    """Run a handler; a Refused becomes {"error": why} with its status."""
    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except Refused as e:
            return JSONResponse({"error": str(e)}, e.status)
    return run


def routes(ctx) -> list[Route]:
    """The API's routes over a server.WebContext (its cfg and index are read at each request: a reload
    that keeps the address swaps them in place)."""

    async def get_status(request):
        return JSONResponse(await run_in_threadpool(actions.status, ctx.cfg))

    async def left_alone(request):
        doc = await run_in_threadpool(actions.status, ctx.cfg)
        return JSONResponse({"queues": {q: ((doc.get("queues") or {}).get(q) or {}).get("ignored")
                                        or {"count": 0, "files": []} for q in ctx.cfg.queues}})

    async def upload(request):
        queue = request.path_params["queue"]
        limit = int(ctx.cfg.limits.max_file_mb * 1e6) + UPLOAD_SLACK
        length = request.headers.get("content-length") or "0"
        if not length.isdigit():
            raise Refused(400, "Content-Length is not a number")
        if int(length) > limit:
            raise Refused(413, f"larger than [limits] max_file_mb = {ctx.cfg.limits.max_file_mb:g} MB")
        received = 0

        async def receive():   # a body sent without a length is counted as it comes
            nonlocal received
            message = await request.receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise TooLarge()
            return message

        try:
            form = await Request(request.scope, receive).form(max_files=1, max_fields=8)
        except TooLarge:
            raise Refused(413, f"larger than [limits] max_file_mb = {ctx.cfg.limits.max_file_mb:g} MB") from None
        except Exception as e:   # not multipart, or torn
            raise Refused(400, f"expected a multipart/form-data body with a field 'file': {e}") from None
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise Refused(400, "expected a multipart/form-data body with a field 'file' (curl -F file=@NAME)")
            said = form.get("hints")   # optional color points: a text field, or a file part
            if isinstance(said, UploadFile):
                said = await said.read(HINTS_MAX + 1)
            points = checked(said.encode() if isinstance(said, str) else said) if said else None
            rec = await run_in_threadpool(ctx.index.upload, queue, upload.filename or "", upload.file, points)
        finally:
            await form.close()
        return JSONResponse({"id": rec["id"], "url": f"/api/files/{rec['id']}", "queue": queue,
                             "name": rec["name"]}, 202)

    async def file_state(request):
        state = ctx.index.state(file_id(request))
        if state is None:
            raise Refused(404, "no such file")
        return JSONResponse(state)

    async def result(request):
        opened = await run_in_threadpool(ctx.index.result, file_id(request))
        if opened is None:
            raise Refused(404, "no result for this id (not done yet, or the result was moved away)")
        return stream(opened, "attachment")

    async def retry(request):
        rec = await run_in_threadpool(ctx.index.retry, file_id(request))
        return JSONResponse({"id": rec["id"], "url": f"/api/files/{rec['id']}", "name": rec["name"]}, 202)

    async def hints(request):
        points = checked(await body(request, HINTS_MAX))
        rec = await run_in_threadpool(ctx.index.recolor, file_id(request), points)
        return JSONResponse({"id": rec["id"], "url": f"/api/files/{rec['id']}", "name": rec["name"]}, 202)

    async def preview(request):
        png, took = await run_in_threadpool(ctx.previews.render, ctx, file_id(request),
                                            await body(request, HINTS_MAX))
        timing = ", ".join(f"{k};dur={v:.1f}" for k, v in took.items())
        return Response(png, media_type="image/png", headers={"Server-Timing": timing, "Cache-Control": "no-store"})

    async def delete(request):
        await run_in_threadpool(ctx.index.delete, file_id(request))
        return JSONResponse({"deleted": request.path_params["id"]})

    async def results(request):
        try:
            page = max(0, int(request.query_params.get("page", "0")))
        except ValueError:
            raise Refused(400, "page must be a number") from None
        rows, total = ctx.index.done(page)
        return JSONResponse({"page": page, "total": total,
                             "results": [ctx.index.state(r["id"]) for r in rows]})

    async def failed(request):
        offset, limit = number(request, "offset", 0), number(request, "limit", PAGE)
        rows, total = await run_in_threadpool(ctx.index.failed, offset, limit)
        return JSONResponse({"offset": offset, "limit": page_size(ctx.index, limit), "total": total,
                             "failed": [{**r_state, "at": r["at"]} for r in rows
                                        if (r_state := ctx.index.state(r["id"])) is not None]})

    async def models(request):
        return JSONResponse({"versions": await run_in_threadpool(actions.models, ctx.cfg,
                                                                 request.path_params["queue"])})

    async def promote(request):
        said = await run_in_threadpool(actions.promote, ctx.cfg, request.path_params["queue"],
                                       request.path_params["version"], who(request))
        return JSONResponse({"message": said})

    async def rollback(request):
        said = await run_in_threadpool(actions.rollback, ctx.cfg, request.path_params["queue"], who(request))
        return JSONResponse({"message": said})

    async def training(request):
        try:
            doc = await run_in_threadpool(actions.status, ctx.cfg)
        except Refused:
            doc = None
        return JSONResponse(await run_in_threadpool(actions.training, ctx.cfg, doc, ctx.train))

    async def train(request):
        queue = request.path_params["queue"]
        if queue not in ctx.cfg.queues:
            raise Refused(404, f"no queue {queue!r}")
        if ctx.train is None:
            raise Refused(503, "training is not available in this process")
        return JSONResponse({"message": ctx.train.start(queue, who(request))}, 202)

    table = [
        ("/api/status", get_status, "GET"),
        ("/api/queues/{queue}/files", upload, "POST"),
        ("/api/inbox/left-alone", left_alone, "GET"),
        ("/api/files/{id}", file_state, "GET"),
        ("/api/files/{id}", delete, "DELETE"),
        ("/api/files/{id}/result", result, "GET"),
        ("/api/files/{id}/retry", retry, "POST"),
        ("/api/files/{id}/hints", hints, "POST"),
        ("/api/files/{id}/preview", preview, "POST"),
        ("/api/files/{id}/delete", delete, "POST"),
        ("/api/results", results, "GET"),
        ("/api/failed", failed, "GET"),
        ("/api/queues/{queue}/models", models, "GET"),
        ("/api/queues/{queue}/models/{version:int}/promote", promote, "POST"),
        ("/api/queues/{queue}/models/rollback", rollback, "POST"),
        ("/api/training", training, "GET"),
        ("/api/queues/{queue}/train", train, "POST"),
    ]
    return [Route(path, answers(fn), methods=[method]) for path, fn, method in table]
