"""The job page of a job routed through Istio, in real headless Chromium: router, objects, held weights.

The page never reloads: it shows the VirtualService's weights as the job writes them.
"""

from __future__ import annotations

import httpx
import pytest
from kubernetes import client as k8s
from playwright.async_api import Browser, expect

from tests.web.conftest import ApiServer, Shop, job_body, job_url, sign_in

pytestmark = pytest.mark.cluster

TRAFFIC = {"routing": "istio", "stableService": "web-stable", "canaryService": "web-canary",
           "istio": {"virtualService": {"name": "web", "routes": ["primary"]}}}


def create_virtual_service(shop: Shop) -> None:
    k8s.CustomObjectsApi(shop.apps.api_client).create_namespaced_custom_object(
        "networking.istio.io", "v1", shop.namespace, "virtualservices", {
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "web"},
            "spec": {"hosts": ["web"], "http": [{"name": "primary", "route": [
                {"destination": {"host": "web-stable"}, "weight": 100},
                {"destination": {"host": "web-canary"}, "weight": 0}]}]}})


async def test_the_page_shows_the_router_and_follows_the_weights_its_route_holds(
        shop: Shop, admin: httpx.AsyncClient, browser: Browser, api_server: ApiServer) -> None:
    shop.create_workload()
    create_virtual_service(shop)
    steps = [{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]
    assert (await admin.put(job_url(shop), json=job_body(shop, steps=steps, traffic=TRAFFIC))).status_code == 201
    page = await sign_in(browser, api_server, "admin", f"/ui/namespaces/{shop.namespace}/jobs/web")

    await expect(page.locator("#job-mode")).to_have_text("canary")
    router = f"Istio: VirtualService {shop.namespace}/web (routes: primary)"
    await expect(page.locator("#job-router")).to_have_text(router)
    await expect(page.locator("#job-router-services")).to_have_text("web-stable (stable), web-canary (canary)")
    primary = page.locator("#route-weights li[data-route='primary']")
    await expect(primary).to_have_attribute("data-canary", "0")

    shop.set_image("registry.local/web:2")
    await expect(primary).to_have_attribute("data-canary", "10")
    await expect(primary).to_have_text("primary: stable 90, canary 10")
    await expect(page.locator("#actual-weight")).to_contain_text("the router holds 10%")

    await page.click("#action-continue")
    await page.click("#confirm-ok")
    await expect(primary).to_have_attribute("data-canary", "50")
    await expect(primary).to_have_attribute("data-stable", "50")
