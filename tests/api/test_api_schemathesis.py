"""Property-based tests of the REST API from its own OpenAPI schema (schemathesis), over real HTTP against a
live server, authenticated, with a fixed seed and a bounded budget, so that CI is reproducible.

Every operation is exercised twice: with schema-valid requests (positive) and with schema-violating ones
(negative). Each response must: not be a server error; carry a documented status code, content type and
headers; conform to the documented response schema; and accept the valid request or refuse the invalid one
(schemathesis' `positive_data_acceptance` / `negative_data_rejection`). Those are the classes a full
`schemathesis run --checks all` reports (docs/testing.md has the command for a larger run); each is zero here.

What a schema cannot say, the test supplies in positive mode (the way schemathesis' own docs suggest for
identifiers): ids of objects that exist, a name not yet taken, a URL Fleetgate may contact, a policy module
that compiles, a cron expression croniter accepts. Everything else is generated. Negative mode is never
guided: invalid references and malformed values must be refused there.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given, settings
from rest_framework.test import APIClient
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import SchemathesisConfig

from clusters import agent_tokens
from clusters.models import AllowList, Cluster
from fleet.access.models import APIToken
from tests.factories import (
    ClusterFactory,
    ClusterGroupFactory,
    CommitFactory,
    PathMappingFactory,
    RepositoryFactory,
    UserFactory,
)

pytestmark = [pytest.mark.django_db(transaction=True)]

# The budget: examples per operation and mode. 94 operations x (8 + 6) keeps both CI passes within minutes.
POSITIVE_EXAMPLES = 8
NEGATIVE_EXAMPLES = 6

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
MODE_CHECKS = {
    GenerationMode.POSITIVE: [*CHECKS, positive_data_acceptance],
    GenerationMode.NEGATIVE: [*CHECKS, negative_data_rejection],
}

MANIFEST = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: st\n  namespace: default\ndata:\n  a: b\n"
POLICY_MODULE = 'package main\n\ndeny contains msg if {\n\tinput.kind == "Forbidden"\n\tmsg := "no"\n}\n'

FLUX_IMPORT = """apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {{name: st-origin, namespace: flux-system}}
spec: {{url: "{url}", ref: {{branch: main}}}}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {{name: st-policies, namespace: flux-system}}
spec: {{sourceRef: {{kind: GitRepository, name: st-origin}}, path: ./policies, prune: true}}
"""


# NUL characters are refused in every string (PostgreSQL cannot store them; DRF answers 400 "Null characters
# are not allowed", tested in tests/api/test_api_resources.py); schemathesis' own switch for such servers.
CONFIG = SchemathesisConfig.from_dict({"generation": {"allow-x00": False}})


def _operations() -> list[Any]:
    document = SchemaGenerator().get_schema(request=None, public=True)
    loaded = schemathesis.openapi.from_dict(json.loads(json.dumps(document, default=str)), config=CONFIG)
    return [result.ok() for result in loaded.get_all_operations()]


OPERATIONS = _operations()


@dataclass
class World:
    """What the live server holds before each operation's examples: one object of each kind."""

    key: str
    ids: dict[str, int]
    commit_sha: str
    origin_url: str
    agent_key: str = ""  # a pull-mode cluster's agent credential, for /api/agent/v1/


def _origin(path: Path) -> str:
    """A real git repository with a policy path: what the policy-source sync action fetches."""
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_SYSTEM": os.devnull}
    env.update(GIT_AUTHOR_NAME="A", GIT_AUTHOR_EMAIL="a@example.com", GIT_COMMITTER_NAME="A")
    env["GIT_COMMITTER_EMAIL"] = "a@example.com"
    (path / "policies").mkdir(parents=True)
    (path / "policies" / "main.rego").write_text(POLICY_MODULE)
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "policies"]):
        subprocess.run(["git", *args], cwd=path, env=env, check=True, capture_output=True)
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=path, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def world(live_server: Any, tmp_path: Path, settings: Any) -> World:
    admin = UserFactory(username="schema-admin", is_superuser=True)
    _, key = APIToken.issue(admin)
    # The agent API is called with a pull-mode cluster's agent credential; a work poll waits at most 1 s.
    settings.FLEETGATE_AGENT_POLL_WAIT = 1
    edge = Cluster(name="st-edge", connection_mode="pull", labels={"env": "edge"})
    edge.save()
    boot, _ = agent_tokens.issue_bootstrap(edge)
    agent_key, _ = agent_tokens.exchange(boot, "schema-agent", "v1.31.0")
    group = ClusterGroupFactory(name="dev")
    cluster = ClusterFactory(name="dev-1", labels={"env": "dev"})
    sha = _origin(tmp_path / "origin")
    repository = RepositoryFactory(name="schema-repo", url=(tmp_path / "origin").as_uri())
    mapping = PathMappingFactory(cluster_group=group, repository=repository)
    # the group's tenant allow-list (GET/PUT/DELETE /api/groups/{id}/allow-list/), allowing everything
    AllowList.objects.create(cluster_group=group, sources=[{"repository": "*", "path": "*"}],
                             namespaces=["*"])
    commit = CommitFactory(repository=repository, sha=sha)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")

    def create(path: str, body: dict[str, Any]) -> int:
        response = api.post(path, body, format="json")
        assert response.status_code == 201, (path, response.content)
        return int(response.json()["id"])

    policy = create(
        "/api/policies/",
        {
            "name": "schema-policy",
            "style": "conftest",
            "modules": [{"path": "main.rego", "source": POLICY_MODULE}],
        },
    )
    ids = {
        "user": admin.pk,
        "group": group.pk,
        "cluster": cluster.pk,
        "repository": repository.pk,
        "mapping": mapping.pk,
        "commit": commit.pk,
        "policy": policy,
        "policybinding": create("/api/policy-bindings/", {"policy": policy, "cluster_group": group.pk}),
        "waiver": create(
            "/api/waivers/",
            {
                "policy": policy,
                "justification": "schema test",
                "expires_at": (datetime.now(UTC) + timedelta(days=7)).isoformat(),
            },
        ),
        "policysource": create(
            "/api/policy-sources/", {"name": "schema-source", "repository": repository.pk, "path": "policies"}
        ),
        "rolebinding": create("/api/access/bindings/", {"user": admin.pk, "role": "viewer"}),
        "apitoken": APIToken.objects.get(user=admin).pk,
        "subscription": create(
            "/api/notifications/subscriptions/",
            {"name": "st", "events": ["commit_blocked"], "cluster_group": group.pk, "channel": "webhook",
             "target": "http://127.0.0.1:9/hook"},
        ),
    }
    return World(key=key, ids=ids, commit_sha=commit.sha, origin_url=repository.url, agent_key=agent_key)


# Path prefix -> the kind of object its {id} names.
PATH_KINDS = {
    "/api/access/bindings/": "rolebinding",
    "/api/access/tokens/": "apitoken",
    "/api/clusters/": "cluster",
    "/api/commits/": "commit",
    "/api/groups/": "group",
    "/api/mappings/": "mapping",
    "/api/policies/": "policy",
    "/api/policy-bindings/": "policybinding",
    "/api/policy-sources/": "policysource",
    "/api/repositories/": "repository",
    "/api/waivers/": "waiver",
    "/api/hooks/git/": "repository",
    "/api/notifications/subscriptions/": "subscription",
}
# Body fields that name another object -> its kind.
REFERENCES = {
    "repository": "repository",
    "cluster_group": "group",
    "bind_group": "group",
    "scope": "group",
    "mapping": "mapping",
    "policy": "policy",
    "cluster": "cluster",
    "commit": "commit",
}
_names = itertools.count(1)


def guide(case: Any, world: World) -> None:
    """Supply, in positive mode only, the values a schema cannot describe (see the module docstring)."""
    path = case.operation.path
    for prefix, kind in PATH_KINDS.items():
        if path.startswith(prefix) and case.path_parameters:
            for name in case.path_parameters:
                case.path_parameters[name] = world.ids[kind]
            break
    if path == "/api/hooks/git/{repository_id}/":
        # One provider's event header, as every delivery has; unsigned, so the answer is 403 (tested with
        # real signatures in tests/security/test_webhook_abuse.py).
        case.headers = {**(case.headers or {}), "X-GitHub-Event": "push"}
    if path == "/api/commits/{id}/rendered/" and isinstance(case.query, dict):
        case.query.update(mapping=world.ids["mapping"], cluster="dev-1")
    if isinstance(case.query, dict) and "label" in case.query:
        case.query["label"] = "env=dev"
    if path == "/api/rollouts/sync-now/":  # a cluster or a group, not both
        case.body = {"cluster": world.ids["cluster"]}
    if path in ("/api/policies/check/", "/api/policy-sources/{id}/sync/") and not isinstance(case.body, dict):
        case.body = {}  # these need fields (a mapping to check, a commit to sync at): filled in below
    if path == "/api/policies/import/":
        case.media_type = "application/json"  # uploads are tested in tests/policies
    if path == "/api/import/gitops/" and isinstance(case.body, dict):
        # Flux objects for the seeded repository, into the seeded group (what each tool's objects become is
        # tested in tests/sources/test_import_gitops_*.py); importing them again creates nothing new.
        dry_run = case.body.get("dry_run", False)
        case.body = {"documents": FLUX_IMPORT.format(url=world.origin_url), "group": "dev",
                     "dry_run": dry_run}
    body = case.body
    if not isinstance(body, dict):
        return
    method = case.operation.method.upper()
    for field, kind in REFERENCES.items():
        if field in body and body[field] is not None:
            if field == "commit" and isinstance(body[field], str):
                continue  # a sha or ref, not an id
            body[field] = world.ids[kind]
    if "pinned_version" in body:
        body["pinned_version"] = None
    for field in ("include", "exclude"):
        if field in body:
            body[field] = [world.ids["cluster"]] if field == "include" else []
    if path.startswith("/api/access/bindings/"):
        body["user"], body["group"] = world.ids["user"], None
    if "name" in body and method in ("POST", "PUT", "PATCH"):
        body["name"] = f"st-{next(_names)}"
    if "url" in body:
        body["url"] = "https://127.0.0.1/team/generated.git"
        if path.startswith("/api/chart-repositories/"):  # a chart repository's URL is unique
            body["url"] = f"https://127.0.0.1/charts/st-{next(_names)}"
    if "cluster_groups" in body and path.startswith("/api/chart-repositories/"):
        body["cluster_groups"] = [world.ids["group"]]
    if "ca_bundle" in body and path.startswith("/api/chart-repositories/"):
        # PEM certificates only (tests/sources/test_helm_chart_repositories_api.py)
        body["ca_bundle"] = ""
    if path.startswith("/api/chart-repositories/") and {"username", "password"} & set(body):
        body.update(username="st-user", password="st-password")  # a password needs a user name
    if "api_url" in body:
        body["api_url"] = "https://127.0.0.1:6443"
    if "path" in body and path.startswith("/api/mappings/"):
        body["path"] = "apps/generated"
    if path.startswith("/api/mappings/") and {"helm_chart", "helm_repo", "helm_version"} & set(body):
        # A chart from a repository needs its name, repository and version together, and a Helm renderer
        # (tests/sources/test_mapping_remote_chart.py): none here, so any renderer goes.
        body.update(helm_chart="", helm_repo="", helm_version="")
    namespace_fields = {"create_namespace", "namespace_labels", "namespace_annotations"}
    if path.startswith("/api/mappings/") and namespace_fields & set(body):
        # Namespace labels need create_namespace, which needs a target namespace other than 'default'
        # (tests/sources/test_mapping_create_namespace.py): one complete combination.
        body.update(create_namespace=False, namespace_labels={}, namespace_annotations={})
    if "helm_values_files" in body and path.startswith("/api/mappings/"):
        body["helm_values_files"] = ["values/generated.yaml"]  # repository paths (no '..', no glob)
    if "depends_on" in body and path.startswith("/api/mappings/"):
        # A new mapping may depend on the seeded one; the seeded one on itself would be a cycle (400).
        body["depends_on"] = [world.ids["mapping"]] if method == "POST" else []
    if "sync_windows" in body:
        body["sync_windows"] = [{"kind": "deny", "schedule": "0 22 * * *", "duration": "1h"}]
    if "expires_at" in body:
        body["expires_at"] = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    # Fields that depend on each other (the schema lists them; which combination is complete, the validators
    # say): one complete combination per operation.
    if path.startswith("/api/clusters/"):
        # push: a pull-mode cluster takes no URL or credential (tests/pull), and the mode is set at creation
        body.update(auth_method="token", token="st-token", kubeconfig="", kubeconfig_context="",
                    connection_mode="push")
        body.update(client_certificate="", client_key="", ca_data="")
        body.setdefault("api_url", "https://127.0.0.1:6443")
    if path.startswith("/api/groups/") and body.get("batch_size") is not None:
        body["batch_percent"] = None  # a batch size or a percentage, not both
    if path.startswith("/api/repositories/"):
        body.update(auth_method="none", token="", ssh_private_key="", username="")
        if "trusted_keys" in body:  # keys gpg or ssh-keygen reads: tests/sources/test_sources_signed_commits
            body["trusted_keys"] = []
    if path.startswith("/api/policy-sources/") and "path" in body:
        body["path"] = f"policies/st-{next(_names)}"
    if path == "/api/policies/check/":  # exactly one of branch, commit, manifests
        body.update(mapping=world.ids["mapping"], manifests=MANIFEST)
        # An operation and a live cluster exclude each other, and a live cluster must be a member's name:
        # tests/policies/test_review_check.py covers them.
        for field in ("repository", "branch", "commit", "live_cluster", "old_manifests"):
            body.pop(field, None)
        if body.get("operation") == "UPDATE":  # an UPDATE reviews against the old version of each object
            body["old_manifests"] = MANIFEST
    if path == "/api/policy-sources/{id}/sync/":  # the seeded repository was never fetched: name a commit
        body["commit"] = world.commit_sha
    if path == "/api/policies/import/":
        module = POLICY_MODULE.replace("package main", f"package st{next(_names)}")
        body.clear()
        body.update(name=f"st-{next(_names)}", cluster_group=world.ids["group"], enforcement="warn")
        body["files"] = {"st/main.rego": module}
    if path.startswith("/api/notifications/subscriptions/"):
        # One subject (a group), a webhook channel and a URL Fleetgate may contact.
        if {"cluster_group", "mapping", "repository"} & set(body) or method == "POST":
            body.update(cluster_group=world.ids["group"], mapping=None, repository=None)
        if "channel" in body or "target" in body or method == "POST":
            body.update(channel="webhook", target="http://127.0.0.1:9/hook")
    if path.startswith("/api/policy-bindings/") and body.get("dryrun_days") is not None:
        body["enforcement"] = "deny"  # a dry run comes before deny or warn
    if path == "/api/policy-previews/":
        # a new binding of the seeded policy (previews of definitions and of existing bindings are tested
        # with real ones in tests/policies/test_policy_preview.py)
        for field in ("binding", "content", "pinned_version"):
            body.pop(field, None)
        body["enforcement"] = "deny"
    if path in ("/api/policies/", "/api/policies/{id}/"):
        body.update(style="conftest", template="", constraints=[], test_modules=[], namespaces=[])
        body["modules"] = [{"path": "main.rego", "source": POLICY_MODULE}]


def names_a_seeded_object(case: Any) -> bool:
    """Whether the guided case's path names an object the world holds (a DELETE example may already have
    removed it; kinds the world does not seed, such as rollouts, may answer 404)."""
    if not case.path_parameters or case.operation.method.upper() == "DELETE":
        return False
    if case.operation.path == "/api/commits/{id}/rendered/":
        return False  # the commit exists; the world holds no render of it (404 "not rendered at this commit")
    return any(case.operation.path.startswith(prefix) for prefix in PATH_KINDS)


def run(operation: Any, mode: GenerationMode, examples: int, live_server: Any, world: World) -> None:
    if operation.path.startswith("/api/agent/v1/") and operation.path != "/api/agent/v1/register":
        world = dataclasses.replace(world, key=world.agent_key)  # the agent API takes agent credentials only
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,  # the fixed seed: the same cases on every run
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        if mode is GenerationMode.POSITIVE:
            guide(case, world)
        response = case.call_and_validate(
            base_url=live_server.url,
            headers={"Authorization": f"Bearer {world.key}"},
            checks=MODE_CHECKS[mode],
        )
        if mode is GenerationMode.POSITIVE and names_a_seeded_object(case):
            # schemathesis accepts a 404 for valid data; an id the test supplied names an object that exists.
            assert response.status_code != 404, f"{case.operation.label}: 404 for a seeded object"

    check()


@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_valid_requests_are_accepted_and_answered_as_documented(
    operation: Any, live_server: Any, world: World
) -> None:
    run(operation, GenerationMode.POSITIVE, POSITIVE_EXAMPLES, live_server, world)


@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_invalid_requests_are_refused_and_answered_as_documented(
    operation: Any, live_server: Any, world: World
) -> None:
    run(operation, GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES, live_server, world)
