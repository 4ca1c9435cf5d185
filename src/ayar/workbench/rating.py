"""The raters' pages: ``/rate/<run>/<rater-token>`` shows one blinded item at a time and records the verdict.

The page is reached with the rater's secret link alone (no workbench login) and
shows only what ``items.jsonl`` holds: the prompt and answers A and B, never a model
or run name, nor a link to any other page. Verdicts go through
:func:`ayar.eval.human.add_rating`, like a CSV import.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.exceptions import HTTPException

from ayar.eval.human import VERDICTS, add_rating, latest_ratings, load_items, rater_tokens
from ayar.workbench.pages import page as _page
from ayar.workbench.runs import is_run

LABELS = {"both_good": "Both good", "a": "Prefer A", "b": "Prefer B", "both_bad": "Both bad"}


def rater_of(workspace: Path, run: str, token: str) -> tuple[Path, str]:
    """(run folder, rater name) for a rating link; 404 for any link that is not one (nothing is revealed)."""
    folder = (workspace / run).resolve()
    if folder.is_relative_to(workspace) and is_run(folder):
        for name, secret in rater_tokens(folder).items():
            if hmac.compare_digest(secret.encode(), token.encode()):
                return folder, name
    raise HTTPException(404, "no such rating link")


routes = APIRouter()


@routes.get("/rate/{run:path}/{token}", response_class=HTMLResponse)
async def rate_page(request: Request, run: str, token: str, item: str = ""):
    folder, rater = rater_of(request.app.state.workspace, run, token)
    items = load_items(folder)
    done = {i for (r, i) in latest_ratings(folder) if r == rater}
    current = next((i for i in items if i["item"] == item), None) or \
        next((i for i in items if i["item"] not in done), None)
    return _page(request, "rate.html", {"rater": rater, "item": current, "done": len(done), "total": len(items),
                                        "verdicts": [(v, LABELS[v]) for v in VERDICTS]})


@routes.post("/rate/{run:path}/{token}")
async def rate_submit(request: Request, run: str, token: str, item: str = Form(...),
                      verdict: str = Form(...), comment: str = Form("")):
    folder, rater = rater_of(request.app.state.workspace, run, token)
    add_rating(folder, rater, item, verdict, comment)
    return RedirectResponse(request.url.path, status_code=303)
