"""Small leaves every floor may use, that belong to no domain and to no store.

A module here imports nothing else of liveroom and is pure where it can be
(time as an argument), with at most a thin adapter onto the standard library:
- ``ratelog``: rate-limited logging, for failures a client can cause at will.

It sits on the ground floor beside ``wire`` (what goes over the wire) and
``storage`` (what the stores share), neither of which it is.
"""
