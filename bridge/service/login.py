"""Sign-in and sign-out of the dashboard, and the OpenAPI docs behind an identity.

`skbridge dashboard` (run as the user) posts a MUNGE credential to /dashboard/ticket and
prints /login?ticket=...: single use, valid service.login_ticket_ttl_s. The login page also
takes a bearer token from POST /api/v1/token, for a browser on another machine.
"""

from __future__ import annotations

import time
from typing import Annotated, Any
from urllib.parse import quote

import structlog
from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from bridge.service.access import Caller, ServiceState, State, caller
from bridge.service.identity import AuthError
from bridge.service.pages import render
from bridge.service.session import COOKIE, Session, check_form, same_origin, session_of, store_of

log = structlog.get_logger(__name__)

router = APIRouter(include_in_schema=False)
HOME = "/dashboard/"


def _signed_in(request: Request, session_id: str, session: Session) -> RedirectResponse:
    response = RedirectResponse(HOME, status_code=303, headers={"Referrer-Policy": "same-origin", "Cache-Control": "no-store"})
    max_age = max(1, int(session.expires - time.time()))
    response.set_cookie(COOKIE, session_id, max_age=max_age, path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return response


def _login_page(message: str | None, status_code: int) -> HTMLResponse:
    return render("login.html", status_code=status_code, message=message, signed=None)


@router.post("/dashboard/ticket", tags=["service"])
def ticket(request: Request, who: Caller) -> dict[str, Any]:
    """A one-time sign-in link for the caller's browser (what `skbridge dashboard` prints)."""
    value, expires = store_of(request).issue_ticket(who.uid, who.gid)
    log.info("dashboard sign-in ticket issued", user=who.user)
    return {"url": f"/login?ticket={quote(value)}", "expires_at": expires, "user": who.user}


@router.get("/login")
def login(request: Request, state: State, ticket: str | None = None) -> Response:
    if ticket is None:
        if session_of(request, state) is not None:
            return RedirectResponse(HOME, status_code=303)
        return _login_page(None, 200)
    # A link followed from another site's page would sign the browser in as whoever made the
    # ticket (login CSRF): only a link pasted or typed into the address bar (Sec-Fetch-Site:
    # none) or one from this service's pages counts; browsers without the header are let be.
    if request.headers.get("sec-fetch-site", "none") not in ("none", "same-origin"):
        state.metrics.auth_failures.labels("ticket").inc()
        return _login_page("open the sign-in link by pasting it into the address bar", 403)
    try:
        session_id, session = store_of(request).redeem(ticket)
    except AuthError as exc:
        state.metrics.auth_failures.labels("ticket").inc()
        return _login_page(str(exc), 401)
    log.info("dashboard sign-in", uid=session.uid)
    return _signed_in(request, session_id, session)


@router.post("/login")
def login_with_token(request: Request, state: State, token: Annotated[str, Form(max_length=4096)]) -> Response:
    if not same_origin(request):
        raise HTTPException(status_code=403, detail="sign in from this service's own login page")
    try:
        uid, gid = state.signer.check(token)
    except AuthError as exc:
        state.metrics.auth_failures.labels("bearer").inc()
        return _login_page(str(exc), 401)
    session_id, session = store_of(request).open_session(uid, gid)
    log.info("dashboard sign-in with a token", uid=uid)
    return _signed_in(request, session_id, session)


@router.post("/logout")
def logout(request: Request, state: State, csrf: Annotated[str, Form(max_length=256)] = "") -> Response:
    signed = session_of(request, state)
    if signed is not None:
        check_form(request, signed, csrf)
        store_of(request).close(signed.session_id)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse(HOME, status_code=303)


def _require_identity(request: Request, state: ServiceState) -> None:
    """A dashboard session, or whatever the API takes (MUNGE credential, bearer token); 401 otherwise."""
    if session_of(request, state) is None:
        caller(request, state)


@router.get("/openapi.json")
def openapi(request: Request, state: State) -> JSONResponse:
    _require_identity(request, state)
    return JSONResponse(request.app.openapi())


@router.get("/docs")
def docs(request: Request, state: State) -> HTMLResponse:
    """The API's routes, rendered here from the OpenAPI document: Swagger UI would load its
    script from a CDN, which a lab's service often cannot reach (and the CSP forbids)."""
    _require_identity(request, state)
    api = request.app.openapi()
    return render("api_docs.html", api=api, routes=api_routes(api), signed=session_of(request, state))


def api_routes(api: dict[str, Any]) -> list[dict[str, Any]]:
    """Each operation of an OpenAPI document: method, path, summary, description, parameters."""
    routes = []
    for path, operations in sorted(api.get("paths", {}).items()):
        for method, operation in operations.items():
            params = [{"name": p.get("name"), "where": p.get("in"), "required": bool(p.get("required"))}
                      for p in operation.get("parameters", [])]
            if "requestBody" in operation:
                params.append({"name": "body", "where": "request body",
                               "required": bool(operation["requestBody"].get("required"))})
            description = (operation.get("description") or "").strip()
            routes.append({"method": method.upper(), "path": path, "summary": operation.get("summary", ""),
                           "description": "" if description == operation.get("summary") else description,
                           "parameters": params})
    return routes
