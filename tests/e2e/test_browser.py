"""What a person sees, in headless Chromium: the Dagster asset graph, `model_evaluation` and its
HTML report, the champion's MLflow run, and the Bento's Swagger UI with a request that works.

The world is tests/e2e/dagster_world.py's (one `dagster dev`, one `full_pipeline` run, one
`bentoml serve`, shared with tests/e2e/test_webserver.py); MLflow's UI is `make mlflow` on it.
Playwright drives the system Chromium (Debian's `chromium`, which `make test` installs); its own
browser downloads are not used. Each page leaves a full-page screenshot in
artifacts/screenshots/ (uploaded by CI), also when its checks fail.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import bentoml
import pytest
import requests
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.e2e.servers import free_port, stop, wait_for_http

# webserver, graphql, full_pipeline_run, forecaster
pytest_plugins = ["tests.e2e.dagster_world"]
pytestmark = pytest.mark.timeout(900)  # a test's timeout includes its fixtures' setup

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
TIMEOUT_MS = 120_000  # the first load of a UI bundle on a busy 2-core machine
# The asset graph's assets, one per stage of the lineage
STAGES = ("sales", "features", "training_set", "demand_model", "model_evaluation", "champion",
          "batch_forecasts", "feature_drift")

EVALUATION_QUERY = """
{ assetNodes(assetKeys: [{path: ["model_evaluation"]}]) {
    assetMaterializations(limit: 1) { metadataEntries { label
        ... on TextMetadataEntry { text } ... on PathMetadataEntry { path }
        ... on UrlMetadataEntry { url } } } } }
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():  # a failure, not a skip: the browser checks are part of `make test`
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1600, "height": 1200})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    yield page
    context.close()


@contextlib.contextmanager
def screenshot(page: Page, name: str) -> Iterator[None]:
    """Saves the page as artifacts/screenshots/<name>.png once the checks inside have run,
    passed or not."""
    try:
        yield
    finally:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


@pytest.fixture(scope="module")
def mlflow_ui(webserver: dict, full_pipeline_run: str) -> Iterator[dict]:
    """`make mlflow PORT=<free>` on the world's tracking store, as a user starts it: its URL,
    and the link to the experiment it prints."""
    port = free_port()
    # BENTOML_HOME and DAGSTER_HOME unset: the Makefile derives them from RETAIL_ML_HOME
    base = {k: v for k, v in os.environ.items() if k not in ("BENTOML_HOME", "DAGSTER_HOME")}
    log = webserver["home"] / "make-mlflow.log"
    proc = subprocess.Popen(["make", "-s", "mlflow", f"PORT={port}"], cwd=ROOT,
                            env={**base, **webserver["env"]}, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health", proc, log, "make mlflow")
        printed = re.search(r"MLflow UI: (\S+)", log.read_text())
        yield {"url": url, "link": printed.group(1) if printed else None, "log": log}
    finally:
        stop(proc, timeout=60)


def test_dagster_asset_graph_shows_the_lineage(webserver: dict, full_pipeline_run: str,
                                               page: Page) -> None:
    page.goto(f"{webserver['url']}/asset-groups")
    with screenshot(page, "dagster_asset_graph"):
        # the global lineage opens with its groups collapsed: expand them, as a person would
        page.locator("[data-svg-viewport]").click(button="right", position={"x": 60, "y": 250})
        page.get_by_role("menuitem", name="Expand all groups").click()
        for name in STAGES:
            expect(page.get_by_text(name, exact=True).first).to_be_visible()
        # the laptop instance's config (deploy/dagster.local.yaml) shows no first-visit modal
        expect(page.get_by_text("Join the Dagster community")).to_have_count(0)


def test_model_evaluation_page_and_its_report(webserver: dict, graphql: Callable[..., dict],
                                              full_pipeline_run: str, page: Page) -> None:
    (node,) = graphql(EVALUATION_QUERY)["assetNodes"]
    entries = {e["label"]: e for e in node["assetMaterializations"][0]["metadataEntries"]}
    gate = entries["gate"]["text"]
    page.goto(f"{webserver['url']}/assets/model_evaluation")
    with screenshot(page, "dagster_model_evaluation"):
        # the gate's whole sentence, not cut off, and the report's links
        expect(page.get_by_text(gate, exact=True).first).to_be_visible()
        expect(page.get_by_text(entries["report_url"]["url"]).first).to_be_visible()
    page.get_by_role("tab", name="Checks").click()
    with screenshot(page, "dagster_model_evaluation_checks"):
        expect(page.get_by_text("promotion_gate").first).to_be_visible()
    report = Path(entries["report"]["path"])
    assert report.is_file() and entries["report_url"]["url"] == report.resolve().as_uri()
    page.goto(entries["report_url"]["url"])
    with screenshot(page, "evaluation_report"):
        text = page.inner_text("body")
        assert "WAPE" in text and "horizon" in text.lower(), text[:2000]
        assert gate in text  # the gate's decision in full
        # self-contained: every plot is drawn from the page itself
        images = page.locator("img")
        assert images.count() > 0
        for i in range(images.count()):
            image = images.nth(i)
            assert (image.get_attribute("src") or "").startswith("data:image/png;base64,")
            assert image.evaluate("img => img.complete && img.naturalWidth > 0")


def test_mlflow_run_shows_the_backtest_metrics(mlflow_ui: dict, page: Page) -> None:
    """The experiment through the link `make mlflow` prints, then the champion's run (the
    version the Bento serves) with the evaluation's metrics."""
    url = mlflow_ui["url"]
    version = requests.get(f"{url}/api/2.0/mlflow/registered-models/alias", timeout=30,
                           params={"name": "demand_forecaster", "alias": "champion"}).json()
    run_id = version["model_version"]["run_id"]
    run = requests.get(f"{url}/api/2.0/mlflow/runs/get", params={"run_id": run_id},
                       timeout=30).json()["run"]
    assert any(m["key"].startswith("backtest_wape") for m in run["data"]["metrics"])
    assert mlflow_ui["link"], f"make mlflow printed no link:\n{mlflow_ui['log'].read_text()}"
    page.goto(mlflow_ui["link"])
    with screenshot(page, "mlflow_experiment"):  # the runs table lists the run by its name
        expect(page.get_by_text(run["info"]["run_name"]).first).to_be_visible()
    page.get_by_role("link", name=run["info"]["run_name"]).first.click()  # as a person does
    expect(page).to_have_url(re.compile(f"/runs/{run_id}"))
    with screenshot(page, "mlflow_run"):
        expect(page.get_by_text(run["info"]["run_name"]).first).to_be_visible()
        # the run's metrics table, filtered as a person looks for the backtest's WAPE
        page.get_by_placeholder("Search metrics").fill("backtest_wape")
        expect(page.get_by_text(re.compile(r"^backtest_wape_challenger")).first).to_be_visible()


def test_swagger_try_it_out_forecasts(forecaster: bentoml.SyncHTTPClient, page: Page) -> None:
    page.goto(forecaster.url)
    with screenshot(page, "swagger"):
        operation = page.locator(".opblock-post").filter(
            has=page.locator('[data-path="/forecast"]'))
        expect(operation).to_be_visible()
        operation.locator(".opblock-summary").click()
        operation.get_by_role("button", name="Try it out").click()
        operation.get_by_role("button", name="Execute").click()
        answer = operation.locator(".live-responses-table tr.response")
        status, body = answer.locator(".response-col_status"), answer.locator(
            ".response-col_description")
        expect(status).to_be_visible()
        assert status.inner_text().strip() == "200", body.inner_text()[:2000]


def test_docs_serves_swagger(forecaster: bentoml.SyncHTTPClient, page: Page) -> None:
    page.goto(f"{forecaster.url}/docs")
    expect(page.locator('.opblock-post [data-path="/forecast"]')).to_be_visible()
