"""The pieces together: a push, its webhook, the fetch of new commits, the export and a render."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fleet.sources.git import RepositoryCache, affected_mappings
from fleet.sources.render import ClusterContext, RenderRequest, SourceTree, render
from fleet.sources.webhooks import WebhookStatus, handle_webhook, normalize_repo_url, sign_github

SECRET = "flow-secret-0123456789abcdef"
CM = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  cluster: ${{cluster.name}}\n"


def test_push_webhook_fetch_render(tmp_path: Path, make_repo: Any) -> None:
    origin = make_repo()
    first = origin.commit("initial", {"apps/web/cm.yaml": CM.format(name="web"),
                                      "apps/api/cm.yaml": CM.format(name="api")})
    cache = RepositoryCache(tmp_path / "cache", 7, origin.url)
    assert cache.new_commits("main", None).new_head == first

    after = origin.commit("change web", {"apps/web/extra.yaml": CM.format(name="web-extra")})
    body = json.dumps({"ref": "refs/heads/main", "before": first, "after": after,
                       "repository": {"clone_url": origin.url}}).encode()
    result = handle_webhook({"X-GitHub-Event": "push", "X-Hub-Signature-256": sign_github(body, SECRET)},
                            body, SECRET)
    assert result.status is WebhookStatus.OK and result.event is not None
    assert normalize_repo_url(result.event.clone_urls[0]) == normalize_repo_url(cache.url)

    update = cache.new_commits(result.event.branch or "", result.event.before)
    assert [c.sha for c in update.commits] == [after]
    assert affected_mappings(["apps/web", "apps/api"], update.changed_paths) == {"apps/web"}
    with cache.export(update.new_head) as exported:
        tree = SourceTree(exported)
        rendered = {
            name: render(tree, RenderRequest(path="apps/web", cluster=ClusterContext(name=name, group="g",
                                                                                     commit=after)))
            for name in ("eu-1", "us-1")
        }
    assert [o.name for o in rendered["eu-1"].objects] == ["web", "web-extra"]
    assert rendered["us-1"].objects[0].body["data"] == {"cluster": "us-1"}
    assert rendered["eu-1"].input_hash != rendered["us-1"].input_hash
