"""FastAPI with websession: the session as a typed dependency, on HTTP and websocket routes.

Run it from the project root::

    uvicorn examples.fastapi_app:app

``session: SessionDep`` is the request's websession Session (a typed mapping
with login, logout, CSRF and flashes). Sessions go to ``example-sessions.db``
(SQLite); set ``WEBSESSION_STORE`` to another store URL, and ``SECRET_KEY``.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import FastAPI, Form, HTTPException, WebSocket

from websession.integrations.fastapi import SessionDep
from websession.integrations.starlette import SessionMiddleware

SECRET_KEY = os.environ.get("SECRET_KEY", "dev-only-secret-change-me-0123456789")
STORE = os.environ.get("WEBSESSION_STORE", "sqlite:///example-sessions.db")

app = FastAPI()
app.add_middleware(SessionMiddleware, secret_key=SECRET_KEY, store=STORE)


@app.get("/")
def home(session: SessionDep) -> dict[str, Any]:
    session["visits"] = session.get("visits", 0) + 1
    return {"visits": session["visits"], "user": session.user_id, "csrf": session.csrf_token()}


@app.post("/login")
def login(
    session: SessionDep, user: Annotated[str, Form()], csrf: Annotated[str, Form()]
) -> dict[str, Any]:
    if not session.check_csrf(csrf):
        raise HTTPException(status_code=403, detail="bad CSRF token")
    session.login(user)  # a new id and CSRF token; the data is kept
    session.flash(f"Welcome, {user}.")
    return {"user": session.user_id, "csrf": session.csrf_token()}


@app.get("/messages")
def messages(session: SessionDep) -> list[str]:
    return [str(message) for _category, message in session.pop_flashes()]


@app.post("/logout")
def logout(session: SessionDep, csrf: Annotated[str, Form()]) -> dict[str, Any]:
    if not session.check_csrf(csrf):
        raise HTTPException(status_code=403, detail="bad CSRF token")
    session.logout()
    return {"user": None}


@app.websocket("/ws")
async def live(websocket: WebSocket, session: SessionDep) -> None:
    # Changes before accept() ride on the handshake's Set-Cookie.
    session["sockets"] = session.get("sockets", 0) + 1
    await websocket.accept()
    await websocket.send_json({"user": session.user_id, "sockets": session["sockets"]})
    await websocket.close()
