"""Egress: what programs the agent saw start are sending off the machine (git pushes, uploads)."""
