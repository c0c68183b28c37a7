"""Watermarks and canaries: marks that tie a copy of the customer's material to a vendor's seat.

The collector mints a mark's payload and keeps only a keyed digest of it (server/store/marks.py);
these modules write payloads into copies (documents, code) and read them back out of whatever a
leaker made of them, on the collector (``dlp-server trace``) and in the agent's scanner alike.
"""
