"""Weights: the manifest, the Hub, installed originals, checkpoint reading and checks, converters."""
