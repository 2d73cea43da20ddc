"""The host build of the NMCM engine: `nmcm-train`, which the engine tests train through."""
