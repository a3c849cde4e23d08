"""Prefect tasks, one per array or vSphere operation (to come)."""
