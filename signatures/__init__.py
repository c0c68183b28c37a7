"""Signature packs (packs/), their samples (samples/) and the tools that check and render them."""
