from django.db import models


class Role(models.TextChoices):
    VIEWER = "viewer", "Viewer"
    DEPLOYER = "deployer", "Deployer"
    APPROVER = "approver", "Approver"
    POLICY_ADMIN = "policy-admin", "Policy admin"
    CLUSTER_ADMIN = "cluster-admin", "Cluster admin"
    ADMIN = "admin", "Admin"
