"""The fleet server's HTTP side: REST API under ``/api/v1``, the live websocket and the dashboard.

``app`` is the Litestar adapter (:func:`~bmsgate.fleet.server.api.app.create_app`), ``server`` the uvicorn
adapter; everything else here is plain Python: ``views`` (JSON shapes), ``stream`` (live updates),
``ratelimit``, ``assets`` (dashboard files), ``settings`` and ``context`` (the collaborators).
"""
