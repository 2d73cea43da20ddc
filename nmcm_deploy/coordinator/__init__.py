"""The coordinator: drives a training job over the nodes of a cluster (docs/protocol.md)."""
