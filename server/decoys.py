"""Decoy files for canaries: a source file, a memo, a cloud key file, each holding one fresh secret.

A canary works when whoever copies the vendor's material takes the decoy along without a second
look, so decoys read like the real thing: a config module with an API client, a pricing or salary
memo in Word format, an AWS credentials file. Names and wording vary from small word lists, so two
vendors' decoys are not the same file. The secret is a ``DLPC1-`` token (code and documents) or an
``AKIA`` access key id (credentials): both forms agent/marks/payload.py CANARY_RE reads, and that
the vendor's canary rule (server/canaries.py) recognises by the secret's hash.
"""

from __future__ import annotations

import base64
import io
import random
import secrets
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from xml.sax.saxutils import escape

from agent.marks.payload import CANARY_RE

KINDS = ("code", "document", "credential")
"""The canary kinds: the one list the store, the canary pack, the API, the UI and the CLI take theirs from."""
_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

_SYSTEMS = ("billing", "payments", "ledger", "crm", "payroll", "invoicing", "settlement", "partner", "pricing", "claims")
_CODE_SUFFIXES = ("client", "config", "settings", "gateway", "service")
_HOSTS = ("api", "gateway", "internal-api", "svc", "backend")
_DOMAINS = ("corp.internal", "prod.internal", "intra.example.com", "svc.cluster.local")
_MEMO_TOPICS = (
    ("salary-bands", "Salary bands"),
    ("pricing-2027", "Pricing proposal"),
    ("compensation-review", "Compensation review"),
    ("partner-rates", "Partner rate card"),
    ("reorg-plan", "Reorganisation plan"),
)
_REGIONS = ("us-east-1", "eu-west-1", "eu-central-1", "us-west-2", "ap-southeast-2")
_PROFILES = ("prod", "deploy", "backup", "ci", "data-export", "billing")


@dataclass(frozen=True)
class Decoy:
    """A decoy file: its suggested name, its bytes, and the secret the canary rule recognises."""

    name: str
    data: bytes
    secret: str


def dlpc_token(rng: random.Random | None = None) -> str:
    """A ``DLPC1-`` canary token (signatures/canary.py format): 16 random bytes in base32."""
    raw = rng.randbytes(16) if rng else secrets.token_bytes(16)
    return "DLPC1-" + base64.b32encode(raw).decode("ascii").rstrip("=")


def aws_key_id(rng: random.Random | None = None) -> str:
    """A decoy AWS access key id: ``AKIA`` and 16 base32 characters (80 random bits)."""
    pick = rng.choice if rng else secrets.choice
    return "AKIA" + "".join(pick(_BASE32) for _ in range(16))


def _aws_secret(rng: random.Random | None) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    pick = rng.choice if rng else secrets.choice
    return "".join(pick(alphabet) for _ in range(40))


def _code(rng: random.Random, secret: str) -> tuple[str, bytes]:
    system = rng.choice(_SYSTEMS)
    suffix = rng.choice(_CODE_SUFFIXES)
    host = f"{rng.choice(_HOSTS)}.{system}.{rng.choice(_DOMAINS)}"
    timeout = rng.choice((5, 10, 15, 30))
    cls = system.capitalize() + "Client"
    text = f'''"""Client for the {system} service: connection settings and a thin HTTP wrapper.

Production credentials. Do not commit changes to this file without approval from platform security.
"""

from __future__ import annotations

import json
import urllib.request

BASE_URL = "https://{host}/v2"
API_TOKEN = "{secret}"
TIMEOUT_S = {timeout}


class {cls}:
    """Calls the {system} API with the service token."""

    def __init__(self, base_url: str = BASE_URL, token: str = API_TOKEN) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token

    def get(self, path: str) -> dict:
        request = urllib.request.Request(self.base_url + path, headers={{"Authorization": "Bearer " + self.token}})
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return json.load(response)
'''
    return f"{system}_{suffix}.py", text.encode("utf-8")


def _run(text: str) -> str:
    return f'<w:p><w:r><w:t xml:space="preserve">{escape(text)}</w:t></w:r></w:p>'


def _document(rng: random.Random, secret: str) -> tuple[str, bytes]:
    slug, title = rng.choice(_MEMO_TOPICS)
    team = rng.choice(_SYSTEMS).capitalize()
    year = rng.choice((2026, 2027))
    lows = [rng.randrange(38, 48) + i * rng.randrange(18, 26) for i in range(4)]
    rows = [f"Band {chr(65 + i)}: {low},000 to {low + rng.randrange(16, 30)},000 per year" for i, low in enumerate(lows)]
    paragraphs = [
        f"{title} {year}: {team}",
        "Confidential. For the leadership team only. Do not forward outside the company.",
        f"This memo sets out the proposed figures for {year}. They have not been announced and must not be shared with staff or partners before the review closes.",
        *rows,
        "Questions go to the finance business partner. Document control reference:",
        secret,  # a line of its own: a line break inside it would split the token in a PDF
    ]
    body = "".join(_run(text) for text in paragraphs)
    ns = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
    document = f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<w:document {ns}><w:body>{body}<w:sectPr/></w:body></w:document>'
    custom = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/custom-properties" '
        'xmlns:vt="http://schemas.openxmlformats.org/officeDocument/2006/docPropsVTypes">'
        f'<property fmtid="{{D5CDD505-2E9C-101B-9397-08002B2CF9AE}}" pid="2" name="DocumentControl"><vt:lpwstr>{secret}</vt:lpwstr></property>'
        "</Properties>"
    )
    core = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f"<dc:title>{escape(title)} {year}</dc:title><dc:creator>{team} Finance</dc:creator></cp:coreProperties>"
    )
    types = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>'
        '<Override PartName="/docProps/core.xml" ContentType="application/vnd.openxmlformats-package.core-properties+xml"/>'
        '<Override PartName="/docProps/custom.xml" ContentType="application/vnd.openxmlformats-officedocument.custom-properties+xml"/>'
        "</Types>"
    )
    rels = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/>'
        '<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/package/2006/relationships/metadata/core-properties" Target="docProps/core.xml"/>'
        '<Relationship Id="rId3" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/custom-properties" Target="docProps/custom.xml"/>'
        "</Relationships>"
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in (("[Content_Types].xml", types), ("_rels/.rels", rels), ("word/document.xml", document), ("docProps/core.xml", core), ("docProps/custom.xml", custom)):
            # A fixed timestamp: the same seed gives the same bytes.
            archive.writestr(zipfile.ZipInfo(name, date_time=(2026, 1, 5, 9, 0, 0)), text)
    return f"{slug}-{team.lower()}.docx", out.getvalue()


def _credential(rng: random.Random, secret: str) -> tuple[str, bytes]:
    profile = rng.choice(_PROFILES)
    region = rng.choice(_REGIONS)
    text = f"# {profile} account: used by the nightly jobs. Rotate with the platform team.\n[{profile}]\naws_access_key_id = {secret}\naws_secret_access_key = {_aws_secret(rng)}\nregion = {region}\n"
    return rng.choice(("credentials", f"aws-{profile}.ini", f"{profile}-credentials")), text.encode("ascii")


_MAKERS: dict[str, tuple[Callable[[random.Random | None], str], Callable[[random.Random, str], tuple[str, bytes]]]] = {
    "code": (dlpc_token, _code),
    "document": (dlpc_token, _document),
    "credential": (aws_key_id, _credential),
}


def decoy(kind: str, *, secret_seed: random.Random | None = None) -> Decoy:
    """A fresh decoy of ``kind`` (code, document, credential).

    Args:
        secret_seed: a seeded generator for reproducible tests; the default draws the secret
            from ``secrets`` (and the wording from an unseeded generator).
    """
    if kind not in _MAKERS:
        raise ValueError(f"canary kind must be one of {', '.join(KINDS)}, not {kind!r}")
    make_secret, make_file = _MAKERS[kind]
    secret = make_secret(secret_seed)
    assert CANARY_RE.fullmatch(secret), secret  # the form readers and rules look for
    name, data = make_file(secret_seed or random.Random(), secret)
    return Decoy(name, data, secret)
