"""Firmware builds, content-addressed: an image is rebuilt only when something it is built from
changes (the firmware sources, the node's generated header, the target, the compiler)."""
