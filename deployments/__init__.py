"""Deployments of the flows: UI-triggered, scheduled and API-triggered (to come)."""
