"""Thin entry points: fedshield.flower's apps with config paths resolved against this app folder."""
