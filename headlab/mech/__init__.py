"""Mechanisms on top of the seam: head sets, generation and the interventions (ablate, patch, steer)."""
