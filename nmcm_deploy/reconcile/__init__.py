"""Desired state (from the manifest) against actual state (recorded and observed), as data."""
