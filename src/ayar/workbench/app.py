"""The workbench's FastAPI application: server-rendered pages over a workspace of run folders.

Pages (``templates/``) and the JSON they refresh from:

- ``/``: the runs table (filter ``q``, sort ``sort``); ``/api/runs`` as JSON.
- ``/runs/<run>``: status, figures, the loss curve (refreshed from ``/runs/<run>/curve.svg`` while
  training), the recipe, the data card, the report, the ledger events, human-evaluation results, and
  buttons that start ``ayar eval`` / ``ayar export`` jobs; ``/runs/<run>/report`` is its report.html.
- ``/compare?run=A&run=B``: 2-4 runs: recipes diffed, metrics side by side with intervals, curves overlaid.
- ``/launch``: pick a recipe (or write one with the form generated from the recipe schema, ``/launch/new``),
  see ``ayar check``'s verdict and ``ayar plan``'s estimate, start training;
  ``/jobs/<id>``: a job's status and log, and its cancel button.
- ``/runs/<run>/chat``: base and tuned side by side on one prompt, streamed from an ``ayar serve`` app of
  the run mounted under ``/chat-api/<n>`` (the same code as ``ayar serve``).
- ``/rate/<run>/<rater-token>``: a rater's blinded page (:mod:`ayar.eval.human`).

Access is decided by :class:`ayar.workbench.auth.Gate` before any route runs.
"""

from __future__ import annotations

import asyncio
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Form, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ayar.errors import AyarError
from ayar.workbench import runs as R
from ayar.workbench.auth import COOKIE, Gate
from ayar.workbench.jobs import Jobs
from ayar.workbench.pages import HERE
from ayar.workbench.pages import page as _page
from ayar.workbench.rating import routes as rating_routes
from ayar.workbench.svg import line_chart


def create_app(workspace: str | Path, *, token: str | None = None, loopback: bool = True) -> FastAPI:
    """The workbench over ``workspace``.

    Args:
        token: the login token (None: no login; only allowed on loopback, see :func:`auth.check_bind`).
        loopback: the server listens on a loopback address.

    Raises:
        AyarError: ``workspace`` is not a folder.
    """
    workspace = Path(workspace).expanduser().resolve()
    if not workspace.is_dir():
        raise AyarError(f"--workspace {workspace}: not a folder")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await asyncio.to_thread(app.state.jobs.close)
        for _, serve_app, engine in app.state.chats.values():
            await asyncio.to_thread(engine.close)
            await asyncio.to_thread(serve_app.state.audit.stopped)  # the ledger: this chat server has stopped

    app = FastAPI(title="ayar workbench", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.workspace, app.state.token, app.state.jobs = workspace, token, Jobs(workspace)
    app.state.chats, app.state.chat_lock = {}, threading.Lock()
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.add_exception_handler(AyarError, _user_error)
    app.include_router(routes)
    app.include_router(rating_routes)
    app.add_middleware(Gate, token=token, loopback=loopback)
    return app


async def _user_error(request: Request, exc: AyarError) -> Response:
    return _page(request, "error.html", {"message": str(exc)}, status=400)


def _run(request: Request, name: str) -> R.Run:
    """The run ``name`` (a path under the workspace); 404 when there is none."""
    workspace: Path = request.app.state.workspace
    folder = (workspace / name).resolve()
    if not folder.is_relative_to(workspace) or not R.is_run(folder):
        raise HTTPException(404, f"no run {name!r} in the workspace")
    return R.read_run(workspace, folder)


def _sorted(runs: list[R.Run], q: str, sort: str) -> list[R.Run]:
    if q:
        needle = q.lower()
        runs = [r for r in runs if any(needle in str(v).lower() for v in (r.name, r.method, r.base, r.data,
                                                                              r.status, r.gate))]
    if sort in ("name", "method", "base", "status", "gate", "final_loss", "eval_loss", "step"):
        runs = sorted(runs, key=lambda r: (getattr(r, sort) is None, str(getattr(r, sort))
                                           if not isinstance(getattr(r, sort), (int, float))
                                           else f"{getattr(r, sort):020.6f}"))
    return runs


routes = APIRouter()  # access is the Gate middleware's, before any route runs


@routes.get("/", response_class=HTMLResponse)
async def runs_table(request: Request, q: str = "", sort: str = ""):
    runs = await run_in_threadpool(R.find_runs, request.app.state.workspace)
    return _page(request, "runs.html", {"runs": _sorted(runs, q, sort), "q": q, "sort": sort,
                                        "jobs": request.app.state.jobs.all()})


@routes.get("/api/runs")
async def runs_json(request: Request):
    runs = await run_in_threadpool(R.find_runs, request.app.state.workspace)
    return [{k: v for k, v in vars(r).items() if k not in ("path", "recipe")} for r in runs]


@routes.get("/runs/{name:path}/curve.svg")
async def curve(request: Request, name: str):
    run = _run(request, name)
    svg = line_chart(R.read_curves(run.path))
    return Response(svg, media_type="image/svg+xml", headers={"X-Run-Status": run.status})


@routes.get("/api/runs/{name:path}/metrics")
async def metrics_json(request: Request, name: str):
    run = _run(request, name)
    return {"status": run.status, **R.read_curves(run.path)}


@routes.get("/runs/{name:path}/report", response_class=HTMLResponse)
async def report(request: Request, name: str):
    run = _run(request, name)
    if not (run.path / "report.html").is_file():
        raise HTTPException(404, "no report yet: run `ayar report` (or evaluate the run)")
    return FileResponse(run.path / "report.html", media_type="text/html")


@routes.get("/runs/{name:path}/chat", response_class=HTMLResponse)
async def chat_page(request: Request, name: str):
    run = _run(request, name)
    if run.status != "finished":
        raise AyarError(f"{name}: training has not finished; chat needs the trained weights")
    prefix, base, tuned = await run_in_threadpool(_chat_app, request.app, run)
    return _page(request, "chat.html", {"run": run, "api": prefix, "base": base, "tuned": tuned})


@routes.post("/runs/{name:path}/jobs")
async def run_job(request: Request, name: str, kind: str = Form(...)):
    run = _run(request, name)
    job = request.app.state.jobs.start(kind, run.path)
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


@routes.post("/runs/{name:path}/raters")
async def add_rater(request: Request, name: str, rater: str = Form(...)):
    from ayar.eval.human import add_rater

    run = _run(request, name)
    await run_in_threadpool(add_rater, run.path, rater)
    return RedirectResponse(f"/runs/{name}#human-eval", status_code=303)


@routes.post("/runs/{name:path}/human/results")
async def human_results(request: Request, name: str):
    from ayar.eval.human_results import write_results

    run = _run(request, name)
    await run_in_threadpool(write_results, run.path)  # human.json, the ledger; the report shows it once rebuilt
    return RedirectResponse(f"/runs/{name}#human-eval", status_code=303)


@routes.get("/runs/{name:path}", response_class=HTMLResponse)
async def run_page(request: Request, name: str):
    run = _run(request, name)
    context = await run_in_threadpool(_run_context, run)
    return _page(request, "run.html", context)


@routes.get("/compare", response_class=HTMLResponse)
async def compare(request: Request, run: list[str] = Query(default=[])):
    if not 2 <= len(run) <= 4:
        raise AyarError("compare 2 to 4 runs: tick them in the runs table")
    chosen = [_run(request, name) for name in run]
    context = await run_in_threadpool(_compare_context, chosen)
    return _page(request, "compare.html", context)


@routes.get("/launch", response_class=HTMLResponse)
async def launch(request: Request, recipe: str = ""):
    workspace = request.app.state.workspace
    recipes = await run_in_threadpool(R.find_recipes, workspace)
    context: dict[str, Any] = {"recipes": [p.relative_to(workspace).as_posix() for p in recipes],
                               "recipe": recipe, "check": None, "plan": None}
    if recipe:
        context.update(await run_in_threadpool(_check_recipe, _recipe_path(workspace, recipe)))
    return _page(request, "launch.html", context)


@routes.post("/launch")
async def launch_start(request: Request, recipe: str = Form(...)):
    path = _recipe_path(request.app.state.workspace, recipe)
    await run_in_threadpool(_check_recipe, path, True)
    job = request.app.state.jobs.start("train", path)
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


@routes.get("/launch/new", response_class=HTMLResponse)
async def new_recipe(request: Request):
    from ayar.workbench.recipe_form import form_sections

    return _page(request, "new_recipe.html", {"sections": form_sections(), "values": {}, "problems": None})


@routes.post("/launch/new", response_class=HTMLResponse)
async def new_recipe_save(request: Request):
    from ayar.workbench.recipe_form import form_sections, save_recipe

    form = await request.form()
    values = {k: str(v) for k, v in form.items()}
    try:
        path = await run_in_threadpool(save_recipe, request.app.state.workspace, values.pop("recipe_name", ""),
                                       values)
    except AyarError as exc:
        return _page(request, "new_recipe.html", {"sections": form_sections(), "values": values,
                                                  "problems": str(exc)}, status=400)
    return RedirectResponse(f"/launch?recipe={path.name}", status_code=303)


@routes.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(request: Request, job_id: str):
    return _page(request, "job.html", {"job": request.app.state.jobs.get(job_id)})


@routes.get("/api/jobs")
async def jobs_json(request: Request):
    return [j.to_dict() for j in request.app.state.jobs.all()]


@routes.post("/jobs/{job_id}/cancel")
async def job_cancel(request: Request, job_id: str):
    request.app.state.jobs.cancel(job_id)
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


@routes.get("/login", response_class=HTMLResponse)
async def login_page(request: Request):
    return _page(request, "login.html", {"failed": False})


@routes.post("/login")
async def login(request: Request, token: str = Form(...)):
    import hmac

    expected = request.app.state.token
    if expected is None:
        return RedirectResponse("/", status_code=303)
    if not hmac.compare_digest(token.encode(), expected.encode()):
        return _page(request, "login.html", {"failed": True}, status=401)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(COOKIE, expected, httponly=True, samesite="strict")
    return response


def _run_context(run: R.Run) -> dict[str, Any]:
    from ayar.eval.human import rater_tokens
    from ayar.eval.human_results import render_results

    human = R.read_json(run.path / "eval" / "human.json")
    comparison = R.read_json(run.path / "eval" / "comparison.json")
    try:
        recipe_text = (run.path / "recipe.yaml").read_text(encoding="utf-8")
    except OSError:
        recipe_text = ""
    return {"run": run, "curve": line_chart(R.read_curves(run.path)), "recipe_text": recipe_text,
            "card": R.data_card(run), "events": R.ledger_events(run.path),
            "summary": R.read_json(run.path / "summary.json"), "comparison": comparison,
            "human": render_results(human) if isinstance(human, dict) and "per_rater" in human else None,
            "has_report": (run.path / "report.html").is_file(),
            "has_human_set": (run.path / "eval" / "human" / "key.json").is_file(),
            "raters": rater_tokens(run.path)}


def _compare_context(runs: list[R.Run]) -> dict[str, Any]:
    metrics: dict[str, list[Any]] = {}
    for i, run in enumerate(runs):
        comparison = R.read_json(run.path / "eval" / "comparison.json") or {}
        for row in comparison.get("metrics") or []:
            metrics.setdefault(row["name"], [None] * len(runs))[i] = row
    curves = {f"{run.name} {key}": values for run in runs for key, values in R.read_curves(run.path).items()
              if values}
    return {"runs": runs, "diff": R.recipe_diff(runs), "metrics": metrics, "curve": line_chart(curves)}


def _recipe_path(workspace: Path, recipe: str) -> Path:
    path = (workspace / recipe).resolve()
    if not path.is_relative_to(workspace) or not path.is_file():
        raise AyarError(f"{recipe}: no such recipe in the workspace")
    return path


def _check_recipe(path: Path, strict: bool = False) -> dict[str, Any]:
    """``ayar check``'s verdict and ``ayar plan``'s estimate; with ``strict``, a bad recipe raises."""
    from ayar.recipe import load_recipe

    try:
        load_recipe(path, [], check_files=True)
    except AyarError as exc:
        if strict:
            raise
        return {"check": str(exc), "plan": None}
    try:
        from ayar.plan.report import plan_cli

        plan = plan_cli([path], gpu=None, as_json=False, calibrate=False, overrides=[])
    except Exception as exc:  # the estimate is advice; a failure to estimate must not hide the recipe
        plan = f"no estimate: {exc}"
    return {"check": "ok", "plan": plan}


def _chat_app(app: FastAPI, run: R.Run) -> tuple[str, str, str]:
    """Mount (once per run) an ``ayar serve`` app of ``run``; returns its prefix, base and tuned names."""
    from ayar.serve.launch import ServeOptions, build

    with app.state.chat_lock:
        if run.name not in app.state.chats:
            serve_app, host, engine = build(ServeOptions(target=str(run.path), no_admin=True, no_gate=True,
                                                         max_queue=8))
            engine.start()  # a mounted app's lifespan does not run; the workbench's own stops it
            prefix = f"/chat-api/{len(app.state.chats) + 1}"
            app.mount(prefix, serve_app)
            app.state.chats[run.name] = ((prefix, host.base_name, next(iter(host.adapters), host.base_name)),
                                         serve_app, engine)
        return app.state.chats[run.name][0]
