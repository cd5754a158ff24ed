"""undertow.sae"""
