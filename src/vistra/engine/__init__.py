"""What the ``vistra`` command adds around Lightning: the class count taken from the data,
resuming a killed run in its own run directory, loggers, the progress bar and the run summary.

Nothing here holds model or loss maths; models, losses and data never import it.
"""
