"""Import the configuration of Rancher Fleet, Argo CD and Flux: their GitRepo, Application,
ApplicationSet, GitRepository, Kustomization and HelmRelease objects become Fleetgate repositories,
cluster groups and path mappings (docs/sources.md, "Importing Fleet, Argo CD and Flux configuration").

Modules: one parser per tool (``rancher``, ``argocd``, ``flux``) fills a ``model.Plan``; ``planner`` reads
the YAML and dispatches by kind; ``applier`` creates what the plan holds for a user, through the same
audited, scope-checked saves as the API (a dry run rolls back); ``environment`` gives the parsers the
clusters, groups and repository trees they need."""

from .applier import Outcome, import_gitops
from .model import ImportError_, Plan
from .planner import make_plan

__all__ = ["ImportError_", "Outcome", "Plan", "import_gitops", "make_plan"]
