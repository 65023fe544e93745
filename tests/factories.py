"""factory_boy factories for the core models."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model

from clusters.models import Cluster, ClusterGroup
from fleet.access.models import RoleBinding
from fleet.sources.models import Commit, PathMapping, Repository


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")

    @factory.post_generation
    def password(self, create: bool, extracted: str | None, **kwargs: object) -> None:
        self.set_password(extracted or "pw-Secret-123")
        if create:
            self.save(update_fields=["password"])


class ClusterFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Cluster

    name = factory.Sequence(lambda n: f"cluster-{n}")
    api_url = factory.Sequence(lambda n: f"https://10.0.{n // 250}.{n % 250}:6443")
    auth_method = "token"
    token = factory.Sequence(lambda n: f"secret-token-{n}-abcdef")
    labels = factory.LazyFunction(lambda: {"env": "dev", "region": "eu"})


class ClusterGroupFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ClusterGroup

    name = factory.Sequence(lambda n: f"group-{n}")
    selector = factory.LazyFunction(lambda: {"matchLabels": {"env": "dev"}})


class RepositoryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Repository

    name = factory.Sequence(lambda n: f"repo-{n}")
    url = factory.Sequence(lambda n: f"https://git.example.com/team/repo-{n}.git")
    branch = "main"


class PathMappingFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PathMapping

    repository = factory.SubFactory(RepositoryFactory)
    name = factory.Sequence(lambda n: f"app-{n}")
    path = factory.Sequence(lambda n: f"apps/app-{n}")
    cluster_group = factory.SubFactory(ClusterGroupFactory)


class CommitFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Commit

    repository = factory.SubFactory(RepositoryFactory)
    sha = factory.Sequence(lambda n: f"{n:040x}")
    author_name = "Dev Eloper"
    author_email = "dev@example.com"
    message = factory.Sequence(lambda n: f"change {n}")
    sequence = factory.Sequence(lambda n: n)


class RoleBindingFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RoleBinding

    user = factory.SubFactory(UserFactory)
    role = "viewer"
    scope = None
