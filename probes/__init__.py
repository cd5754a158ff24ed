"""undertow.probes"""
