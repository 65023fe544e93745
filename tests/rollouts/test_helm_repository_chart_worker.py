"""A mapping whose fleetgate.yaml names a chart in a Helm repository (a real HTTPS chart repository on
127.0.0.1 with basic auth, its credentials and CA stored as a ChartRepository), fetched, rendered and rolled
out by a real Celery worker to a sandbox cluster: the objects carry the mapping's release name and
namespace; the chart is downloaded once; the credentials appear in no log, audit row or render."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet.audit.models import AuditEvent
from fleet.rollouts.models import Rollout
from fleet.sources.choices import FetchTrigger
from fleet.sources.models import ChartRepository, MappingRender, RenderedManifest
from fleet.sources.services import request_fetch
from tests.chart_servers import ChartRepoServer, LocalCA, make_chart
from tests.rollouts.conftest import make_group, make_mapping, make_repository
from tests.workers import Worker, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
PASSWORD = "worker-chart-s3cret"
NAMESPACE_TEMPLATE = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {{ .Release.Namespace }}\n"


def test_a_worker_rolls_out_a_chart_from_a_helm_repository(
    tmp_path: Path, git_repo: Any, make_fleet: Any
) -> None:
    ca = LocalCA(tmp_path / "ca")
    server = ChartRepoServer(tmp_path / "served", ca, auth=("robot", PASSWORD))
    chart = make_chart(tmp_path / "src", "web", "1.2.0")
    (chart / "templates" / "ns.yaml").write_text(NAMESPACE_TEMPLATE)
    server.publish(chart)
    ChartRepository.objects.create(
        name="team-charts", url=server.url, username="robot", password=PASSWORD, ca_bundle=ca.ca_pem
    )
    fleet = make_fleet({"h1": {"env": "helmw"}})
    group = make_group("helmw", "helmw")
    repo = make_repository(git_repo)
    mapping = make_mapping(repo, "web", "apps/web", group)
    mapping.helm_release_name = "shop"
    mapping.target_namespace = "storefront"
    mapping.save()
    git_repo.commit(
        {
            "apps/web/fleetgate.yaml": yaml.safe_dump(
                {
                    "helm": {
                        "chart": "web",
                        "repo": server.url,
                        "version": "~1.2.0",
                        "values": {"greeting": "hi"},
                    }
                }
            )
        },
        "web from the team chart repository",
    )
    cache = tmp_path / "chart-cache"  # the worker's own chart cache: this run's download is counted
    worker = Worker(tmp_path / "worker.log", concurrency=1, FLEETGATE_CHART_CACHE=str(cache))
    try:
        request_fetch(repo, trigger=FetchTrigger.API)  # the fetch, the render and the sync run on the worker
        rollout = wait_for(
            lambda: Rollout.objects.filter(mapping=mapping, state__in=("synced", "failed", "halted")).first(),
            timeout=180,
            what="the rollout to finish on the worker",
        )
    finally:
        worker.stop()
        server.stop()
    render = MappingRender.objects.get(mapping=mapping)
    assert render.status == "rendered", render.error_message
    assert rollout.state == "synced", rollout.reason
    box = fleet.sandbox("h1")
    cm = box.get_object("v1", "ConfigMap", "shop-web", "storefront")
    assert cm is not None
    assert cm["data"]["release"] == "shop" and cm["data"]["namespace"] == "storefront"
    assert cm["data"]["greeting"] == "hi" and cm["data"]["cluster"] == fleet.clusters["h1"].name
    assert cm["metadata"]["labels"]["chart"] == "web-1.2.0"
    assert box.get_object("v1", "Namespace", "storefront") is not None
    assert server.hits["/charts/web-1.2.0.tgz"] == 1
    assert len(list((cache / "sha256").glob("*.tgz"))) == 1
    # the password went to the repository, never anywhere a person reads
    assert PASSWORD not in worker.log
    stored = RenderedManifest.objects.get(mapping=mapping)
    assert PASSWORD not in json.dumps([stored.resources, stored.warnings])
    for event in AuditEvent.objects.all():
        assert PASSWORD not in json.dumps([event.before, event.after, event.message])
