"""Statistics computed by walking compiled trees with the engine (above both in the layout: trees -> engine -> stats)."""
