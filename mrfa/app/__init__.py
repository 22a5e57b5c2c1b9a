"""``mrfa app``: a local web page to animate a portrait and reconstruct a video (optional extra ``.[app]``).

:mod:`mrfa.app.jobs` holds the work (no Gradio needed); :mod:`mrfa.app.server` the Gradio page over it.
"""
