"""Deployments of the flows (UI-triggered, scheduled, API-triggered) and the local server."""
