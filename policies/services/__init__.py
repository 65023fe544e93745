"""Policy services: the domain logic behind the API, commands and tasks (no HTTP here).

* definitions: PolicyDefinition, validate_definition, save_policy (immutable versions)
* evaluation: evaluate_mapping, evaluate, evaluate_targets, latest_evaluations (what rollouts call)
* checking: check_mapping, format_report (check before merge)
* importing: import_files, read_directory
* sources: sync_policy_source, sync_sources_for_head
* waivers: create_waiver, expire_waiver
"""
