"""Prefect flows: restore-from-snapshot, restore-drill, janitor, snapshot-catalog (to come)."""
