"""``tipsv2 serve``: an HTTP search service over built index directories.

``live`` keeps one consistent generation per index open and switches when a writer publishes,
``images`` turns request bytes into a checked image, ``clip_compat`` answers clip-retrieval's
``ClipClient`` / front end, ``api`` is the typed ``/v1`` API, ``app`` assembles them and
``command`` is the CLI entry point. FastAPI and uvicorn come from the optional ``[serve]`` extra.
"""
