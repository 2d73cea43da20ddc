"""Putting node images on real boards with pyOCD (`apply --target hardware`, `nmcm probes`).

``pyocd_session`` is the boundary with pyOCD (the only module that imports it); ``packs`` finds
the CMSIS pack files on this machine; ``flasher`` flashes, verifies, resets and waits for each
node; targets/hardware.py is the target that builds the images and hands them to it. Setup:
docs/bring-up.md.
"""
