"""Prefect blocks: vCenter credentials and one driver block per array vendor."""
