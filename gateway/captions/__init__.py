"""Captions at the gateway: routing ``caption.<call>.<lang>`` to the sockets that read that
language (:mod:`.routing`, :mod:`.router`), and the transcripts browsers send in P2P calls
(:mod:`.transcripts`). The socket events are in :mod:`gateway.sockets.captions`.
"""
