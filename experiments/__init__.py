"""undertow.experiments"""
