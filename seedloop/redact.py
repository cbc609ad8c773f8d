"""What a secret looks like, and how to print a value without it: the one place that knows.

Everything that prints a URL, settings, a client configuration or a log line goes through here
(`Settings.redacted()`, the log formatters in seedloop/logs.py, the operator-facing error lines
in seedloop/preflight.py), so a form of secret learnt once is hidden everywhere.

URLs are redacted by parsing them the way the clients do (urllib's split, as redis-py's
`parse_url`), not by pattern-matching known forms:
* user-info: `redis://user:pw@h` keeps the user, `redis://:pw@h` and `redis://pw@h` (a lone
  user-info, which operators paste passwords into) are masked;
* query parameters whose name looks secret (`?password=`, `?token=`, `?sasl.password=`, ...);
* any scheme (`redis`, `rediss`, `unix:///path?password=`, `kafka`, `http`);
* a URL that does not parse the way the clients parse it (an unencoded `/`, `?`, `#` or `@` in
  the password, a port that is not a number) is masked whole: which part is the secret is then
  unknown, and a partial mask could print half a password.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Protocol
from urllib.parse import unquote, unquote_plus, urlsplit

MASK = "**********"

# Secrets shorter than this are not searched for in free text: replacing every "a" of a log line
# would destroy it. Structured redaction (keys, URLs) still masks them.
MIN_SCRUB_LEN = 4

_SECRET_WORDS = ("password", "passwd", "pwd", "secret", "token", "credential", "apikey", "api_key",
                 "api-key", "private_key", "private.key", "oauth")
# "pass" and "auth" only as whole words (`pass`, `sasl_auth`), not inside `passes` or `author`.
_SECRET_WORD_RE = re.compile(r"(^|[^a-z])(pass|auth)($|[^a-z])")
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*$")
# A URL inside free text: a scheme, "://", then up to the next whitespace.
_URL_IN_TEXT_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://\S+")


class HasSecrets(Protocol):
    """The settings fields that can hold a secret (seedloop.settings.Settings)."""

    @property
    def redis_url(self) -> Any: ...
    @property
    def kafka_sasl_password(self) -> Any: ...
    @property
    def control_token(self) -> Any: ...
    @property
    def kafka_bootstrap_servers(self) -> str | None: ...


def is_secret_key(key: str) -> bool:
    """Whether a configuration or query key names a secret (`sasl.password`, `ssl.key.password`,
    `kafka_sasl_password`, `control_token`, `password`, `auth_token`, ...)."""
    k = key.lower()
    return any(word in k for word in _SECRET_WORDS) or _SECRET_WORD_RE.search(k) is not None


def _opaque(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    return f"{scheme}://{MASK}" if sep and _SCHEME_RE.match(scheme) else MASK


def _split(url: str) -> tuple[str, str, str, str, str, str] | None:
    """(scheme, user-info with its "@" or "", host[:port], path, query, fragment); None when the
    URL does not parse the way the clients parse it (see the module docstring)."""
    if "://" not in url:
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return None
    if not _SCHEME_RE.match(parts.scheme):
        return None
    # The user-info ends at the netloc's last "@", as urllib and redis-py read it. Any other "@"
    # (in the path, query or fragment) means a password with an unencoded delimiter.
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if "@" in parts.path or "@" in parts.fragment:
        return None
    if any("@" in v and not is_secret_key(unquote_plus(k)) for k, _, v in _query_pairs(parts.query)):
        return None
    return parts.scheme, userinfo + at, hostport, parts.path, parts.query, parts.fragment


def _query_pairs(query: str) -> list[tuple[str, str, str]]:
    out = []
    for piece in query.split("&"):
        key, eq, value = piece.partition("=")
        out.append((key, eq, value))
    return out


def redact_url(url: str) -> str:
    """`url` with its secrets replaced by MASK; the host, port, path and other options stay
    readable, which is what an operator needs to see in a log."""
    split = _split(url)
    if split is None:
        return _opaque(url)
    scheme, userinfo, hostport, path, query, fragment = split
    if userinfo:
        user, colon, _password = userinfo[:-1].partition(":")
        userinfo = f"{user}:{MASK}@" if colon else f"{MASK}@"
    if query:
        query = "&".join(
            f"{k}{eq}{MASK if v and is_secret_key(unquote_plus(k)) else v}" for k, eq, v in _query_pairs(query)
        )
    # The clients ignore a fragment; it can only be a mistake, and might hold anything.
    tail = f"?{query}" if query else ""
    return f"{scheme}://{userinfo}{hostport}{path}{tail}{'#' + MASK if fragment else ''}"


def url_secrets(url: str) -> set[str]:
    """The secret substrings of `url`, in every spelling a library might print them (as written,
    percent-decoded): what `scrub` must hide from free text such as an error message."""
    found: set[str] = set()
    split = _split(url)
    if split is None:
        # Which part is secret is unknown: hide everything after the scheme, and what would be
        # the password if the last "@" ended the user-info.
        _, sep, rest = url.partition("://")
        rest = rest if sep else url
        if "@" in rest:
            userinfo = rest[: rest.rfind("@")]
            _user, colon, password = userinfo.partition(":")
            found |= {userinfo, password if colon else userinfo}
        else:
            # A password where the port goes (`redis://host:pw/0`): what follows a ":" in the
            # authority and is not a port number.
            authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
            found |= {p for p in authority.split(":")[1:] if not p.isdigit()}
        return {s for s in found | {rest} if s}
    _, userinfo, _, _, query, fragment = split
    if userinfo:
        user, colon, password = userinfo[:-1].partition(":")
        found.add(password if colon else user)
    for key, _, value in _query_pairs(query):
        if value and is_secret_key(unquote_plus(key)):
            found.add(value)
    if fragment:
        found.add(fragment)
    decoded = {unquote(s) for s in found} | {unquote_plus(s) for s in found}
    return {s for s in found | decoded if s}


def _redact_url_in_text(match: re.Match[str]) -> str:
    found = match.group(0)
    # Sentence punctuation after a URL is not part of it ("... at http://h:6066.").
    url = found.rstrip(".,;:)]}'\"")
    # Only a URL with user-info, a query or a fragment, or one that does not parse (a password
    # where the port goes), can hold a secret: a plain http://host:port/path is left alone.
    if not any(c in url for c in "@?#") and _split(url) is not None:
        return found
    return redact_url(url) + found[len(url):]


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Free text (a log line, an error message) with every URL in it redacted and every known
    secret value replaced by MASK."""
    if "://" in text:
        text = _URL_IN_TEXT_RE.sub(_redact_url_in_text, text)
    return scrub(text, secrets)


def scrub(text: str, secrets: Iterable[str]) -> str:
    # Longest first, so a secret that contains another is replaced whole.
    for secret in sorted({s for s in secrets if len(s) >= MIN_SCRUB_LEN}, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_value(value: Any, key: str | None = None) -> Any:
    """A value safe to print: mappings and sequences recursively, a secret-looking key's value
    masked (None stays None: "not set" is worth seeing), URLs in strings redacted. Use it for
    settings dumps and client configurations (a librdkafka dict with `sasl.password`)."""
    if key is not None and value is not None and is_secret_key(key):
        return MASK
    if isinstance(value, Mapping):
        return {k: redact_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    if isinstance(value, str):
        return redact_url(value) if _URL_IN_TEXT_RE.fullmatch(value) else redact_text(value)
    return value


def secrets_of(settings: HasSecrets) -> set[str]:
    """Every secret value the settings hold, for `scrub`: the password parts of REDIS_URL (and of
    KAFKA_BOOTSTRAP_SERVERS, should an operator write user-info there), the SASL password, the
    control token."""
    found: set[str] = set()
    for secret in (settings.redis_url, settings.kafka_sasl_password, settings.control_token):
        if secret is None:
            continue
        value = secret.get_secret_value() if hasattr(secret, "get_secret_value") else str(secret)
        if secret is settings.redis_url:
            found |= url_secrets(value)
        elif value:
            found.add(value)
    for server in (settings.kafka_bootstrap_servers or "").split(","):
        if "@" in server:
            found |= url_secrets(server if "://" in server else f"kafka://{server.strip()}")
    return found


def redact_servers(servers: str) -> str:
    """A comma-separated server list (KAFKA_BOOTSTRAP_SERVERS) with any user-info masked."""
    out = []
    for server in servers.split(","):
        s = server.strip()
        if "@" in s or "?" in s:
            s = redact_url(s) if "://" in s else redact_url(f"kafka://{s}").removeprefix("kafka://")
        out.append(s)
    return ",".join(out)
