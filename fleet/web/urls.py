from django.contrib.auth import views as auth_views
from django.urls import path

from fleet.access.views import LoginView
from fleet.web.views import access, audit, clusters, dashboard, policies, previews, rollouts, sources

app_name = "web"

urlpatterns = [
    path("login/", LoginView.as_view(), name="login"),  # password and single sign-on
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", dashboard.dashboard, name="dashboard"),
    path("clusters/", clusters.cluster_list, name="cluster-list"),
    path("clusters/register/", clusters.cluster_register, name="cluster-register"),
    path("clusters/<int:pk>/", clusters.cluster_detail, name="cluster-detail"),
    path("clusters/<int:pk>/edit/", clusters.cluster_edit, name="cluster-edit"),
    path("clusters/<int:pk>/test/", clusters.cluster_test, name="cluster-test"),
    path(
        "clusters/<int:pk>/agent/bootstrap/", clusters.cluster_agent_bootstrap, name="cluster-agent-bootstrap"
    ),
    path("clusters/<int:pk>/agent/revoke/", clusters.cluster_agent_revoke, name="cluster-agent-revoke"),
    path("groups/", clusters.group_list, name="group-list"),
    path("groups/preview/", clusters.selector_preview, name="selector-preview"),
    path("groups/<int:pk>/", clusters.group_detail, name="group-detail"),
    path("groups/<int:pk>/edit/", clusters.group_edit, name="group-edit"),
    path("repositories/", sources.repository_list, name="repository-list"),
    path("repositories/<int:pk>/", sources.repository_detail, name="repository-detail"),
    path("repositories/<int:pk>/signing/", sources.repository_signing, name="repository-signing"),
    path("commits/<int:pk>/", sources.commit_detail, name="commit-detail"),
    path("rollouts/", rollouts.rollout_list, name="rollout-list"),
    path("rollouts/<int:pk>/", rollouts.rollout_detail, name="rollout-detail"),
    path("rollouts/<int:pk>/rollback/", rollouts.rollout_rollback, name="rollout-rollback"),
    path("rollouts/<int:pk>/<str:action>/", rollouts.rollout_act, name="rollout-act"),
    path("policies/", policies.policy_list, name="policy-list"),
    path("policies/new/", policies.policy_edit, name="policy-new"),
    path("policies/<int:pk>/", policies.policy_detail, name="policy-detail"),
    path("policies/<int:pk>/edit/", policies.policy_edit, name="policy-edit"),
    path("policies/<int:pk>/preview/", previews.preview_start, name="policy-preview"),
    path(
        "policies/<int:pk>/bindings/<int:binding_pk>/preview/", previews.preview_start, name="binding-preview"
    ),
    path("policies/previews/<int:pk>/", previews.preview_detail, name="preview-detail"),
    path("policies/bindings/<int:pk>/", previews.binding_detail, name="binding-detail"),
    path("waivers/", policies.waivers, name="waivers"),
    path("waivers/<int:pk>/expire/", policies.waiver_expire, name="waiver-expire"),
    path("audit/", audit.audit_log, name="audit"),
    path("access/", access.access, name="access"),
]
