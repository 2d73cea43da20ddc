"""Running the NMCM engine: the host trainer today, simulated and real nodes later."""
