"""The Fleetgate pull-mode agent (issue 18).

Runs next to or inside a cluster that Fleetgate cannot reach, asks Fleetgate for the cluster's work over
HTTPS (outbound only), applies it with the same connector code as the push path, and reports results,
health and drift. Start it with ``python -m clusters.agent``; see docs/clusters.md, "Installing the agent".

This package must import without Django settings: the agent runs with no database and no
DJANGO_SETTINGS_MODULE (``clusters.agent.digest`` in particular imports nothing from Django, the server
imports it to compute the same digest).
"""

AGENT_VERSION = "0.1.0"  # the Fleetgate release (pyproject.toml) the agent ships with
