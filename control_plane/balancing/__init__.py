"""Latency-aware load balancing across the replicas of one version (EDS endpoint weights)."""
