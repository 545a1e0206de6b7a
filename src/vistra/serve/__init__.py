"""``vistra serve``: a trained model behind HTTP on LitServe, with a page to try it.

The HTTP processes read and check each request (``requests``), model workers run the same
``Predictor`` as ``vistra predict`` on batches of them (``api``) and answer with the rows its
result files hold (``answer``); ``app`` adds the page, ``/info``, ``/health``, the key and the
one-line errors; ``command`` is the command line.
"""
