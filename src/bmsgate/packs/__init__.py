"""Packs and gateway software as signed artifacts: TUF metadata, the server's repository, the gateway's updater.

- :mod:`bmsgate.packs.errors`: :class:`~bmsgate.packs.errors.PackError`, every refusal with its
  :class:`~bmsgate.fleet.updates.FailureReason`.
- :mod:`bmsgate.packs.trust`: the only module importing python-tuf / securesystemslib: keys, metadata,
  signing, the gateway's :class:`~bmsgate.packs.trust.TrustedRepository` and the desired state's signature.
- :mod:`bmsgate.packs.fetch`: the HTTPS downloader (stdlib) the TUF updater uses, with resumable range requests.
- :mod:`bmsgate.packs.repository`: the server-side repository on disk (online snapshot/timestamp signing).
"""
