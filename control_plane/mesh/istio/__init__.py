"""Istio: render Weir's routing as VirtualService + DestinationRule, import them back, drive them in a cluster."""
