"""Who may do what: authentication (static tokens, platform JWTs), ownership, signed playback,
quota and the platform's pre-create hook.

Modules, each with one reason to change: ``principal`` (who is asking), ``tokens`` and ``jwt``
(credentials → principal), ``authenticator`` (which of the two), ``middleware`` (every request,
before any route: *who* is asking, never whether that is enough), ``requires`` (what a route
needs of that principal, and the refusal when it is not met), ``access`` (ownership: 404 for
others), ``signing`` (expiring playback links; delivery checks them and signs its playlists),
``quota`` and ``prehook`` (may this upload start), ``tus_guard`` (the tus handler's view of all
that), ``routes`` (my unfinished uploads, playback URL) and ``setup`` (built from Settings).
"""
