"""Prefect tasks, one per array or vSphere operation, and the pyVmomi calls they make."""
