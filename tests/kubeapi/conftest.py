"""The real etcd + kube-apiserver fixtures, defined in tests/kube_backends.py (shared with the connector
and contract tests): ``kube_apiserver``, ``kube_apiserver_bin_dir``, ``kube_dynamic_client``,
``kube_namespace``. See that module and docs/testing.md."""

from tests.kube_backends import (  # noqa: F401 - fixtures and the marker hook are registered by import
    KubeApiServer,
    kube_apiserver,
    kube_apiserver_bin_dir,
    kube_dynamic_client,
    kube_helper,
    kube_namespace,
    pytest_collection_modifyitems,
)
