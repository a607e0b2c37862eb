"""The archive: the call event stream projected into MongoDB (history and transcripts).

``python -m gateway.archive`` runs the consumer; :mod:`gateway.archive.repository` is what
it writes and what the gateway's history endpoints read.
"""
