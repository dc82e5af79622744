"""Secrets never printed: URLs and messages made fit for logs, errors, manifests and reports.

``redact_url`` drops user info (``user:password@``) and replaces the value of every query
parameter that looks like a credential (``token``, ``api_key``, ``password``, ``signature``, ...)
by ``REDACTED``. It does not trust ``urllib.parse`` with the user info: a password holding ``#``,
``/`` or ``?`` (not percent-encoded) moves the URL's split points, and parsing the port then fails
with a message quoting the start of the password ("Port could not be cast to integer value as
'hunter'"). ``redact_text`` removes every secret of the given URLs from any text (an exception
message from requests or pyvo quotes the URL it fetched, query string included).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, unquote, urlencode

REDACTED = "REDACTED"
# query parameter names that carry credentials (matched anywhere in the name, any case)
_SECRET_PARAM = re.compile(r"token|key|secret|pass|pwd|sig|auth|cred|session|jwt|bearer|cookie|otp", re.I)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)(.*)$", re.S)


def _split(url: str) -> tuple[str, str | None, str]:
    """(scheme://, the raw user info or None, the rest after it)."""
    m = _SCHEME.match(url or "")
    if not m:
        return "", None, url or ""
    scheme, rest = m.groups()
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in authority:  # the well-formed case
        at = authority.rfind("@")
        return scheme, rest[:at], rest[at + 1 :]
    port = authority.rpartition(":")[2] if ":" in authority and not authority.endswith("]") else None
    if port is not None and not port.isdigit():  # "user:pa" of a password holding '/', '#' or '?'
        at = rest.rfind("@")
        while at >= 0 and not _plausible_host(rest[at + 1 :]):
            at = rest.rfind("@", 0, at)
        if at >= 0:
            return scheme, rest[:at], rest[at + 1 :]
    return scheme, None, rest


def split_userinfo(url: str) -> tuple[str, str | None, str | None]:
    """(the URL without ``user:password@``, user, password), robust to ``#``, ``/`` and ``?`` in
    the password (a "port" that is not a number marks such a URL)."""
    scheme, userinfo, rest = _split(url)
    if userinfo is None:
        return url, None, None
    user, colon, password = userinfo.partition(":")
    return scheme + rest, unquote(user), (unquote(password) if colon else None)


def _plausible_host(text: str) -> bool:
    host = re.split(r"[/?#]", text, maxsplit=1)[0]
    return bool(re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+", host))


def redact_url(url: str) -> str:
    """``url`` fit for any log, error, manifest or report: no user info, no fragment, and the
    values of query parameters that look like keys, tokens, passwords or signatures redacted."""
    if not url:
        return url or ""
    bare, _, _ = split_userinfo(str(url))
    base, _, fragment = bare.partition("#")
    base, q, query = base.partition("?")
    if not q:
        return base
    params = parse_qsl(query, keep_blank_values=True)
    if not params and query:  # not key=value pairs: keep nothing of it
        return base + "?" + REDACTED
    clean = [(k, REDACTED if _SECRET_PARAM.search(k) else v) for k, v in params]
    return base + "?" + urlencode(clean, safe="/:,@", quote_via=quote)


def url_secrets(url: str) -> list[str]:
    """The secret strings a URL holds (user info, credential-looking query values), raw and
    decoded, longest first, for scrubbing them out of messages."""
    if not url:
        return []
    bare, user, password = split_userinfo(str(url))
    found = {s for s in (password, _split(str(url))[1]) if s}  # a user name alone is no secret
    query = bare.partition("#")[0].partition("?")[2]
    for raw in query.split("&"):
        k, _, v = raw.partition("=")
        if v and _SECRET_PARAM.search(unquote(k)):
            found.update({v, unquote(v), unquote(v.replace("+", " "))})
    return sorted((s for s in found if len(s) >= 3), key=len, reverse=True)


def redact_text(text: str, *urls: str) -> str:
    """``text`` with every secret of ``urls`` replaced, and any ``key=value`` that looks like a
    credential or ``scheme://user:password@`` left in it redacted too."""
    text = str(text)
    for url in urls:
        for secret in url_secrets(url):
            text = text.replace(secret, REDACTED)
    text = re.sub(
        r"(?i)\b([\w.-]*(?:token|key|secret|pass|pwd|sig|auth|cred)[\w.-]*)=([^&\s'\"]+)",
        rf"\1={REDACTED}",
        text,
    )
    text = re.sub(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@'\"]+@", r"\1", text)
    return text
