"""The dataset browser as a FastAPI app, mounted by the Airflow API server under ``/medtrinity``
through the plugin interface, behind Airflow's own login: every route requires a user the auth
manager allows to see plugins (the JWT cookie the Airflow UI sets, or a bearer token). A browser
that is not logged in is sent to Airflow's login page and back.

The output store is the one ``MEDTRINITY_OUTPUT`` names in the API server's environment.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context

from medtrinity_tasks.browser import views
from medtrinity_tasks.config import load_settings
from medtrinity_tasks.records import DESCRIPTION_SECTIONS
from medtrinity_tasks.roi.overlay import draw_rois, roi_colour
from medtrinity_tasks.storage import open_store


@pass_context
def path_for(context, name: str, **params) -> str:
    """A route's path under the mount prefix, without scheme and host, so links hold behind a proxy.
    Resolved on this app's own routes: the API server sees only an opaque mount (``LazyApp``)."""
    request = context["request"]
    return request.scope.get("root_path", "") + request.app.url_path_for(name, **params)


TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")
TEMPLATES.env.globals.update(
    path_for=path_for, roi_colour=roi_colour, sections=DESCRIPTION_SECTIONS, page_size=views.PAGE_SIZE
)


def _store():
    settings = load_settings()
    return open_store(settings.output_uri, settings)


def create_app() -> FastAPI:
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import requires_access_view

    app = FastAPI(
        title="MedTrinity dataset browser",
        dependencies=[Depends(requires_access_view(AccessView.PLUGINS))],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.exception_handler(HTTPException)
    async def login_first(request: Request, exc: HTTPException):
        """A page asked for without a login goes to Airflow's login page, then comes back."""
        if exc.status_code == 401 and "text/html" in request.headers.get("accept", ""):
            from airflow.api_fastapi.app import get_auth_manager

            return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)), status_code=303)
        return await http_exception_handler(request, exc)

    @app.exception_handler(views.NotFound)
    async def not_found(request: Request, exc: views.NotFound):
        return HTMLResponse(f"<p>{escape(str(exc))}</p>", status_code=404)

    @app.get("/", response_class=HTMLResponse, name="index")
    def index(request: Request):
        store = _store()
        sources = views.source_summaries(store)
        failures = views.recent_failures(store, [source["source_id"] for source in sources])
        return TEMPLATES.TemplateResponse(
            request, "index.html", {"sources": sources, "failures": failures, "output": store.uri}
        )

    @app.get("/sources/{source_id}", response_class=HTMLResponse, name="source")
    def source(request: Request, source_id: str, page: int = Query(0, ge=0), quarantined: bool = False):
        store = _store()
        manifest = views.read_manifest(store, source_id)
        records, total = views.records_page(store, source_id, page, quarantined)
        return TEMPLATES.TemplateResponse(
            request,
            "source.html",
            {"manifest": manifest, "records": records, "total": total, "page": page, "quarantined": quarantined},
        )

    @app.get("/sources/{source_id}/shards/{shard_id}/{record_id}.png", name="record_image")
    def record_image(source_id: str, shard_id: str, record_id: str, quarantined: bool = False):
        png, rois = views.record_image(_store(), source_id, shard_id, record_id, quarantined)
        return Response(draw_rois(png, rois), media_type="image/png", headers={"Cache-Control": "private, max-age=60"})

    return app
