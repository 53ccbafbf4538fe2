"""The jobs users run on videos: extraction, classification, one-video features, provenance, the demo."""
