"""The web app (``pano360 serve``): :mod:`.service` (generation and files, no web framework) and
:mod:`.app` (the Gradio page, imported only when serving; ``pip install "pano360[web]"``)."""
