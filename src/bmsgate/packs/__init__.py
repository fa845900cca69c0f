"""Packs: signed, versioned bundles of data files (protocols, register maps, CAN profiles) for the fleet.

``bundle`` is the pack file format (build, read, validate, install into a catalog layer); ``compatibility``
decides whether a gateway can run one; the TUF side (signing, metadata, verified download) is ``trust``
(the only module importing python-tuf), over ``fetch`` (the resumable HTTPS downloader); ``repository`` is
the fleet server's repository on disk. ``errors`` has :class:`~bmsgate.packs.errors.PackError`, every
refusal with the :class:`~bmsgate.fleet.updates.FailureReason` a gateway reports.
"""
