"""undertow.experiments.prompts: where the data flow starts.

The cessation prompt suite (``suite``, from hand-written templates and fillers in
``data/``), its named contrast views (``contrasts``), the lexical (TF-IDF) audit
(``audit``), file I/O and dataset resolution (``io``), answer rows for probe
transfer (``answers``), and loaders for the public model-written evals (``mwe/``).
"""
