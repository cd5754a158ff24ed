"""undertow.experiments.study: the probe study (every layer x probe type, with controls) and its report sections."""
