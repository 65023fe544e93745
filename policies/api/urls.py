from rest_framework.routers import DefaultRouter

from policies.api import preview, reports, views

app_name = "policies-api"

router = DefaultRouter()
router.include_root_view = False
router.register("policies", views.PolicyViewSet)
router.register("policy-bindings", views.PolicyBindingViewSet)
router.register("waivers", views.WaiverViewSet)
router.register("evaluations", views.EvaluationViewSet)
router.register("violations", views.ViolationViewSet)
router.register("policy-sources", views.PolicySourceViewSet)
router.register("policy-previews", preview.PolicyPreviewViewSet)
router.register("policy-reports", reports.PolicyReportViewSet, basename="policyreport")
urlpatterns = router.urls
