"""undertow.kernels"""
