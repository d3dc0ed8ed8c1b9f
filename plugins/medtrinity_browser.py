"""The dataset browser in the Airflow UI: a FastAPI app the API server mounts under /medtrinity
(behind Airflow's login), and a "Dataset browser" entry in the UI's navigation that shows it.
The app lives in ``medtrinity_tasks.browser``; this file only registers it."""

from airflow.plugins_manager import AirflowPlugin

from medtrinity_tasks.browser import LazyApp


class MedtrinityBrowserPlugin(AirflowPlugin):
    name = "medtrinity_browser"
    fastapi_apps = [
        {
            "app": LazyApp("medtrinity_tasks.browser.app:create_app"),
            "url_prefix": "/medtrinity",
            "name": "MedTrinity dataset browser",
        }
    ]
    external_views = [
        {
            "name": "Dataset browser",
            "href": "medtrinity/",
            "destination": "nav",
            "category": "browse",
            "url_route": "medtrinity",
        }
    ]
