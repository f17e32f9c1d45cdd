"""Find key material and tokens in chunk text, so that such a chunk reaches neither store.

Findings name the file, line and kind of secret, never the secret. Precision matters as
much as recall: a name containing "secret" is not a secret, only a value is.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Iterable

from tasks.records import Chunk, SecretFinding

# (kind, pattern, literals of which at least one must appear: a cheap check before the regex)
_RULES = [
    ("AWS access key id", r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b",
     ("AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA")),
    ("AWS secret access key", r"(?i:aws)[\w.-]{0,30}?(?i:secret|private)[^\n\"']{0,40}[\"'][0-9A-Za-z/+]{40}[\"']",
     ("aws", "AWS", "Aws")),
    ("private key", r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----", ("PRIVATE KEY",)),
    ("GitHub token", r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b",
     ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_")),
    ("Slack token", r"\bxox[abposr]-[0-9A-Za-z-]{10,}", ("xox",)),
    ("Slack webhook URL", r"https://hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9+/_-]{20,}", ("hooks.slack.com",)),
    ("Google API key", r"\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])", ("AIza",)),
    ("Google OAuth client secret", r"\bGOCSPX-[0-9A-Za-z_-]{28}", ("GOCSPX-",)),
    ("Stripe live key", r"\b(?:sk|rk)_live_[0-9A-Za-z]{20,}", ("_live_",)),
    ("JSON Web Token", r"\beyJ[0-9A-Za-z_-]{8,}\.eyJ[0-9A-Za-z_-]{8,}\.[0-9A-Za-z_-]{8,}", ("eyJ",)),
]
# `const API_KEY: &str = "..."`, `password = "..."`, `token: "..."`: a quoted long value assigned
# to a secret-like name. The value must also look random (see _looks_secret).
ASSIGNED = "secret-like value assigned to a secret-like name"
_ASSIGNED_NAMES = ("password", "passwd", "secret", "token", "apikey", "api_key", "accesskey", "access_key",
                   "privatekey", "private_key", "authkey", "auth_key", "credential")  # fmt: skip
_ASSIGNED = re.compile(
    r"(?i:password|passwd|secret|token|api_?key|access_?key|private_?key|auth_?key|credential)\w*"
    r"[^\n\"=;(){}]{0,40}?[=:]\s*&?\s*(?:r#*)?\"(?P<value>[^\"\s]{16,200})\""
)
_COMPILED = [(kind, re.compile(pattern), literals) for kind, pattern, literals in _RULES]
_WORDS = re.compile(r"[A-Za-z]+(?:[_.-][A-Za-z]+)*")
_PLACEHOLDER = re.compile(r"(?i)x{4,}|\*{3,}|\.{3}|example|changeme|placeholder|dummy|your[_-]|<[^>]*>|\$\{|\{\}|test")


def find_secrets(text: str) -> list[tuple[int, str]]:
    """(0-based line offset, kind) for each secret in text."""
    found: list[tuple[int, str]] = []
    for kind, pattern, literals in _COMPILED:
        if any(literal in text for literal in literals):
            found += [(text.count("\n", 0, m.start()), kind) for m in pattern.finditer(text)]
    lowered = text.lower()
    if any(name in lowered for name in _ASSIGNED_NAMES):
        for match in _ASSIGNED.finditer(text):
            if _looks_secret(match.group("value")):
                found.append((text.count("\n", 0, match.start()), ASSIGNED))
    return sorted(found)


def _looks_secret(value: str) -> bool:
    """A random-looking value: mixed character classes, high entropy, not a placeholder or a path."""
    if _PLACEHOLDER.search(value) or value.startswith(("/", "./", "http://", "https://")) and "@" not in value:
        return False
    if _WORDS.fullmatch(value):  # MY_SERVICE_API_KEY, some-config-name: a name, not a value
        return False
    has = [bool(re.search(p, value)) for p in (r"[a-z]", r"[A-Z]", r"[0-9]", r"[^A-Za-z0-9]")]
    if sum(has) < 3 and not (has[2] and (has[0] or has[1])):  # keys mix letters with digits or symbols
        return False
    counts = Counter(value)
    entropy = -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())
    return entropy >= 3.2


def withhold_secrets(chunks: Iterable[Chunk]) -> tuple[list[Chunk], list[SecretFinding]]:
    """Split chunks into those safe to store and findings (path:line, kind) for the others."""
    kept: list[Chunk] = []
    findings: set[SecretFinding] = set()
    for chunk in chunks:
        hits = find_secrets(chunk.code) + [(0, kind) for _, kind in find_secrets(chunk.doc)]
        if not hits:
            kept.append(chunk)
            continue
        for offset, kind in hits:
            line = chunk.start_line + offset if chunk.end_line - chunk.start_line >= offset else chunk.start_line
            findings.add(SecretFinding(chunk.rel_path, line, kind))
    return kept, sorted(findings, key=lambda f: (f.rel_path, f.line, f.kind))
