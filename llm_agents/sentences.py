"""A reply ends on a sentence boundary, not where the token limit cut it.

A model stopped by ``max_reply_tokens`` (or the text by ``max_reply_chars``)
leaves half a sentence. ``end_on_sentence`` cuts the reply back to its last
complete sentence when that keeps at least a third of it; otherwise (one
long sentence) it ends the text on its last whole word with an ellipsis.
A reply that already ends a sentence is left alone. Pure.
"""

from __future__ import annotations

import re

# A sentence ends with . ! ? or … (several in a row), then maybe closing
# quotes or brackets; an emoji or similar symbol at the very end counts too.
_CLOSERS = "\"')\\]\u00bb\u201d\u2019"
_ENDS = re.compile(f"[.!?\u2026]+[{_CLOSERS}]*$|[\U0001F300-\U0001FAFF\u2600-\u27BF]$")
_BOUNDARY = re.compile(f"[.!?\u2026]+[{_CLOSERS}]*(?=\\s)")
# Trailing punctuation that must not precede the ellipsis (dashes included).
_DANGLING = ",;:-\u2013\u2014 "
KEEP_AT_LEAST = 1 / 3


def end_on_sentence(text: str) -> str:
    body = text.rstrip()
    if not body or _ENDS.search(body):
        return body
    cut = 0
    for m in _BOUNDARY.finditer(body):
        cut = m.end()
    if cut and cut >= len(body) * KEEP_AT_LEAST:
        return body[:cut]
    words = body.rsplit(None, 1)
    head = words[0] if len(words) == 2 and len(words[0]) >= len(body) * KEEP_AT_LEAST else body
    return head.rstrip(_DANGLING) + "\u2026"
