"""Prefect flows: restore-from-snapshot, restore-drill, janitor and snapshot-catalog."""
