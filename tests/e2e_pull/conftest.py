"""Fixtures of the end-to-end pull-mode tests: the rollout fixtures (sandbox server, git repository, push
clusters) and the kube-apiserver fixtures, registered here by import."""

from tests.kube_backends import (  # noqa: F401 - fixtures and the marker hook are registered by import
    KubeApiServer,
    kube_apiserver,
    kube_apiserver_bin_dir,
    kube_namespace,
    pytest_collection_modifyitems,
)
from tests.rollouts.conftest import (  # noqa: F401
    git_repo,
    make_fleet,
    sandbox_server,
)
