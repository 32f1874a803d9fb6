"""Benchmark tenant generator and peer-engine adapters (pycasbin, cedarpy)."""
