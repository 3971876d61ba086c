"""Optional integrations (each imports its framework lazily)."""
