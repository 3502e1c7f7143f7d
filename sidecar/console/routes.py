"""The console's pages. Each view is a client of the REST API (`ConsoleAPI`, with the signed-in key); routes here
only turn forms into API calls and API answers into templates.

Rules: every POST form carries the session's CSRF token (checked before anything else); the session cookie is
HttpOnly, SameSite=Strict and scoped to `/console`; redirects go only to console paths; pages send a strict
Content-Security-Policy (no inline script, nothing from other origins) and are never cached.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from sidecar.console import charts
from sidecar.console.api import SEGMENT, ConsoleAPI, ConsoleAPIError
from sidecar.console.sessions import ConsoleSession, SessionStore
from sidecar.console.views import (adapters_view, lifecycle_view, memories_defaults, memories_view, memory_view,
                                   playground_turn, tiers_view)

COOKIE = "memsidecar_console"
HERE = Path(__file__).parent
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}
MEMORY_ACTIONS = ("edit", "delete", "feedback", "restore")
ADAPTER_ACTIONS = ("load", "unload", "pin", "unpin")


class SignInRequired(Exception):
    """Raised by a view without a live session; answered with a redirect to the sign-in page."""


class CsrfRejected(Exception):
    """A POST whose form did not carry this session's CSRF token."""


def install_console(app: FastAPI, sessions: SessionStore | None = None) -> None:
    """Serve the console at `/console` and its static files at `/console/static`."""
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.globals.update(human_bytes=charts.human_bytes, date_time=charts.date_time)
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")
    app.include_router(console_router(sessions or SessionStore(), templates))

    @app.exception_handler(SignInRequired)
    async def sign_in(request: Request, error: SignInRequired) -> Response:
        return _redirect("/console/signin")

    @app.exception_handler(CsrfRejected)
    async def csrf_rejected(request: Request, error: CsrfRejected) -> Response:
        return Response("The form was stale or not from this console; reload the page and try again.",
                        status_code=403, media_type="text/plain", headers=SECURITY_HEADERS)


class Pages:
    """What every console route needs: the caller's session, its checked form, its API client, and rendering."""

    def __init__(self, sessions: SessionStore, templates: Jinja2Templates) -> None:
        self.sessions = sessions
        self.templates = templates

    def session_of(self, request: Request) -> ConsoleSession:
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is None:
            raise SignInRequired()
        return session

    async def checked_form(self, request: Request, session: ConsoleSession) -> dict[str, Any]:
        form = await request.form()
        token = str(form.get("csrf", ""))
        if not hmac.compare_digest(token.encode(), session.csrf.encode()):
            raise CsrfRejected()
        return {key: form.getlist(key) if len(form.getlist(key)) > 1 else value for key, value in form.items()}

    def api(self, request: Request, session: ConsoleSession) -> ConsoleAPI:
        return ConsoleAPI(request.app, session.key, request.client.host if request.client else "unknown")

    def render(self, request: Request, name: str, session: ConsoleSession | None, status: int = 200,
               **context: Any) -> Response:
        body = {"session": session, "flash": session.take_flash() if session else None, "nav": name, **context}
        response = self.templates.TemplateResponse(request, f"{name}.html", body, status_code=status)
        response.headers.update(SECURITY_HEADERS)
        return response


def console_router(sessions: SessionStore, templates: Jinja2Templates) -> APIRouter:
    router = APIRouter(prefix="/console", include_in_schema=False)
    pages = Pages(sessions, templates)
    for add_routes in (_session_routes, _memory_routes, _playground_routes, _adapter_and_tier_routes):
        add_routes(router, pages)
    return router


def _session_routes(router: APIRouter, pages: Pages) -> None:
    """Home, sign-in and sign-out."""

    @router.get("")
    async def home(request: Request) -> Response:
        return _redirect("/console/memories" if pages.sessions.get(request.cookies.get(COOKIE)) else "/console/signin")

    @router.get("/signin")
    async def signin_page(request: Request) -> Response:
        return pages.render(request, "signin", None)

    @router.post("/signin")
    async def signin(request: Request) -> Response:
        form = await request.form()
        key = str(form.get("api_key", "")).strip()
        client = request.client.host if request.client else "unknown"
        try:
            tenant = (await ConsoleAPI(request.app, key, client).get("/v1/whoami"))["tenant"]
        except ConsoleAPIError as error:
            message = "That API key was not accepted." if error.status == 401 else error.message
            return pages.render(request, "signin", None, status=error.status, error=message)
        session = pages.sessions.create(key, tenant)
        response = _redirect("/console/memories")
        response.set_cookie(COOKIE, session.id, httponly=True, samesite="strict", path="/console",
                            secure=request.url.scheme == "https", max_age=int(pages.sessions.ttl_s))
        return response

    @router.post("/signout")
    async def signout(request: Request) -> Response:
        session = pages.session_of(request)
        await pages.checked_form(request, session)
        pages.sessions.end(session.id)
        response = _redirect("/console/signin")
        response.delete_cookie(COOKIE, path="/console")
        return response


def _memory_routes(router: APIRouter, pages: Pages) -> None:
    """Memories, a memory, its actions, and the lifecycle view."""

    @router.get("/memories")
    async def memories(request: Request) -> Response:
        session = pages.session_of(request)
        query = dict(request.query_params)
        context = await _guarded(memories_view(pages.api(request, session), query))
        return pages.render(request, "memories", session, **{**memories_defaults(query), **context})

    @router.post("/memories")
    async def add_memory(request: Request) -> Response:
        session = pages.session_of(request)
        form = await pages.checked_form(request, session)
        body = {"user_id": form.get("user_id", ""), "content": form.get("content", ""),
                "type": form.get("type") or "fact"}
        if form.get("importance"):
            body["importance"] = _number(form["importance"])
        await _act(session, pages.api(request, session).post("/v1/memories", body), "Memory added.")
        return _redirect(_back(form, f"/console/memories?{urlencode({'user_id': body['user_id']})}"))

    @router.get("/memories/{memory_id}")
    async def memory(request: Request, memory_id: str = PathParam(pattern=SEGMENT)) -> Response:
        session = pages.session_of(request)
        context = await _guarded(memory_view(pages.api(request, session), memory_id))
        return pages.render(request, "memory", session, status=404 if context.get("error") else 200, **context)

    @router.post("/memories/{memory_id}/{action}")
    async def memory_action(request: Request, action: str = PathParam(pattern=r"^[a-z]{1,16}$"),
                            memory_id: str = PathParam(pattern=SEGMENT)) -> Response:
        session = pages.session_of(request)
        form = await pages.checked_form(request, session)
        if action not in MEMORY_ACTIONS:
            return Response("unknown action", status_code=404)
        client = pages.api(request, session)
        path = f"/v1/memories/{memory_id}"
        calls = {
            "edit": lambda: client.call("PATCH", path, json=_edit_body(form)),
            "delete": lambda: client.call("DELETE", path),
            "feedback": lambda: client.post(f"{path}/feedback", {"kind": form.get("kind"),
                                                                 **({"text": form["text"]} if form.get("text")
                                                                    else {})}),
            "restore": lambda: client.post(f"{path}/restore"),
        }
        done = {"edit": "Memory updated.", "delete": "Memory deleted.", "feedback": "Feedback recorded.",
                "restore": "Memory restored."}
        await _act(session, calls[action](), done[action])
        return _redirect(_back(form, "/console/memories"))

    @router.get("/lifecycle")
    async def lifecycle(request: Request) -> Response:
        session = pages.session_of(request)
        context = await _guarded(lifecycle_view(pages.api(request, session), dict(request.query_params)))
        return pages.render(request, "lifecycle", session, status=context.get("error_status", 200), **context)


def _playground_routes(router: APIRouter, pages: Pages) -> None:
    """The chat playground."""

    @router.get("/playground")
    async def playground(request: Request) -> Response:
        session = pages.session_of(request)
        return pages.render(request, "playground", session, turns=session.turns,
                      user_id=request.query_params.get("user_id", ""))

    @router.post("/playground")
    async def chat(request: Request) -> Response:
        session = pages.session_of(request)
        form = await pages.checked_form(request, session)
        user_id = str(form.get("user_id", ""))
        try:
            turn = await playground_turn(pages.api(request, session), session.turns, user_id,
                                         str(form.get("message", "")), inject=bool(form.get("inject")),
                                         write=bool(form.get("write")))
            session.add_turn(turn)
        except ConsoleAPIError as error:
            session.flash = f"Error: {error.message}"
        return _redirect(f"/console/playground?{urlencode({'user_id': user_id})}")

    @router.post("/playground/reset")
    async def reset_playground(request: Request) -> Response:
        session = pages.session_of(request)
        await pages.checked_form(request, session)
        session.turns = []
        return _redirect("/console/playground")


def _adapter_and_tier_routes(router: APIRouter, pages: Pages) -> None:
    """Adapters, their jobs and actions, and the tiers view."""

    @router.get("/adapters")
    async def adapters(request: Request) -> Response:
        session = pages.session_of(request)
        return pages.render(request, "adapters", session, **await _guarded(adapters_view(pages.api(request, session))))

    @router.get("/adapters/jobs.json")
    async def jobs_json(request: Request) -> Response:
        session = pages.session_of(request)
        try:
            body = await pages.api(request, session).get("/v1/adapters/jobs")
        except ConsoleAPIError as error:
            return JSONResponse({"error": error.message}, status_code=error.status, headers=SECURITY_HEADERS)
        return JSONResponse(body, headers=SECURITY_HEADERS)

    @router.post("/adapters/distill")
    async def distill(request: Request) -> Response:
        session = pages.session_of(request)
        form = await pages.checked_form(request, session)
        body = {"name": form.get("name"), "source": "memories", "user_id": form.get("user_id"),
                "max_steps": _integer(form.get("max_steps") or 20)}
        await _act(session, pages.api(request, session).post("/v1/adapters/distill", body), "Distillation started.")
        return _redirect("/console/adapters")

    @router.post("/adapters/{name}/{action}")
    async def adapter_action(request: Request, action: str = PathParam(pattern=r"^[a-z]{1,16}$"),
                             name: str = PathParam(pattern=SEGMENT)) -> Response:
        session = pages.session_of(request)
        form = await pages.checked_form(request, session)
        client = pages.api(request, session)
        if action == "bind":
            body = {"user_id": form.get("user_id") or None}
            call = client.call("PUT", f"/v1/adapters/{name}/binding", json=body)
        elif action in ADAPTER_ACTIONS:
            call = client.post(f"/v1/adapters/{name}/{action}")
        else:
            return Response("unknown action", status_code=404)
        await _act(session, call, f"Adapter {name}: {action} done.")
        return _redirect("/console/adapters")

    @router.get("/tiers")
    async def tiers(request: Request) -> Response:
        session = pages.session_of(request)
        return pages.render(request, "tiers", session, **await _guarded(tiers_view(pages.api(request, session))))



async def _guarded(view) -> dict[str, Any]:
    """A view's context, or an `error` the page shows when the API refused."""
    try:
        return await view
    except ConsoleAPIError as error:
        return {"error": error.message, "error_status": error.status}


async def _act(session: ConsoleSession, call, done: str) -> None:
    try:
        await call
        session.flash = done
    except ConsoleAPIError as error:
        session.flash = f"Error: {error.message}"


def _edit_body(form: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if form.get("content"):
        body["content"] = form["content"]
    if form.get("importance"):
        body["importance"] = _number(form["importance"])
    return body


def _number(text: Any) -> float | str:
    """A form number as a float; unparsable text is passed on so that the API names the field in its refusal."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return str(text)


def _integer(text: Any) -> int | str:
    number = _number(text)
    return int(number) if isinstance(number, float) and number.is_integer() else str(text)


def _back(form: dict[str, Any], default: str) -> str:
    """Where a form returns to: its `next` field when that is a console path, else `default` (no open redirect)."""
    target = str(form.get("next") or "")
    if target.startswith("/console/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)

