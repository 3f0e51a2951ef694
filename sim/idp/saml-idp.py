#!/usr/bin/env python3
"""A real SAML 2.0 identity provider for the tests and the demo: PyPI pysaml2's
`saml2.server.Server`, signing with Debian's xmlsec1, behind a small HTTP front.

    saml-idp.py keys <dir> <name>
        writes <dir>/<name>.key and <dir>/<name>.pem (RSA 2048, self-signed)
    saml-idp.py metadata <port> <key> <cert> <file>
        writes the identity provider's own metadata (what `serve` on that port is) to <file>
    saml-idp.py serve <port> <key> <cert> <sp-metadata-url> <users>
        serves http://127.0.0.1:<port>/idp (its entity ID); <users> is a comma-separated list of
        e-mail addresses, each signing in with the password "idp-pw", or "*" (the demo): any
        address, with any password; the service provider's metadata is fetched from
        <sp-metadata-url> once, at start, and read by pysaml2 as-is

Endpoints: GET /sso/redirect (HTTP-Redirect binding: the AuthnRequest, its signature checked
when the service provider's metadata says it signs), the login form, POST /sso/login (answers
the HTTP-POST binding's self-submitting form), GET /metadata.

With SAML_TEST_CONTROLS=1, `POST /__test/tamper/<mode>` makes the next response lie the way the
mode says (see TAMPERING), once; a JSON body {"url": ...} gives the DOCTYPE modes their
external reference. Prints "ready <port>" when it listens.
"""

import copy
import datetime
import html
import json
import os
import re
import secrets
import sys
import tempfile
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, class_name, samlp
from saml2.config import IdPConfig
from saml2.saml import AUTHN_PASSWORD_PROTECTED, NAMEID_FORMAT_EMAILADDRESS, NameID
from saml2.server import Server
from saml2.sigver import (
    RSA_1_5,
    RSA_OAEP_MGF1P,
    get_pem_wrapped_unwrapped,
    pre_encryption_part,
    pre_signature_part,
)
from saml2.xmldsig import DIGEST_SHA1, DIGEST_SHA256, SIG_RSA_SHA1, SIG_RSA_SHA256

PASSWORD = "idp-pw"
AES128_CBC = "http://www.w3.org/2001/04/xmlenc#aes128-cbc"

TAMPERING = {
    "response_signed": "the Response is signed instead of the Assertion (accepted)",
    "unsigned": "nothing is signed",
    "other_key": "signed by another key, no KeyInfo",
    "keyinfo_only": "signed by another key whose certificate rides in KeyInfo",
    "wrap_sibling": "a second, unsigned assertion for dave@mail.example beside the signed one",
    "wrap_extension": "the signed assertion moved under Extensions, an evil one in its place",
    "audience": "the assertion is for another service provider",
    "destination": "the response and its recipient name another address",
    "destination_signed": "a signed Response for another destination (its recipient right)",
    "unsolicited": "no InResponseTo",
    "other_flow": "InResponseTo names a request this browser never made",
    "expired": "every time two hours in the past",
    "sha1": "RSA-SHA1 over SHA-1 digests",
    "comment": "the NameID of alice@...evil.example with a comment after alice's address",
    "doctype_entities": "a DOCTYPE whose entity is the NameID",
    "doctype_external": "a DOCTYPE with an external DTD and an external parameter entity",
    "encrypted": "the assertion encrypted to the service provider's certificate (accepted)",
    "encrypted_rsa15": "the assertion's key transported by RSA PKCS#1 v1.5",
}


def make_keys(directory, name):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, f"{name}.key"), "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(os.path.join(directory, f"{name}.pem"), "wb") as out:
        out.write(certificate.public_bytes(serialization.Encoding.PEM))


def pem_body(path):
    """The base64 of a PEM certificate, as KeyInfo carries it."""
    with open(path) as f:
        return "".join(line.strip() for line in f if "-----" not in line)


def server_for(base, key, cert, sp_metadata=None):
    # A service provider that says it signs its requests has every one checked.
    signs_requests = False
    if sp_metadata:
        with open(sp_metadata) as f:
            signs_requests = 'AuthnRequestsSigned="true"' in f.read()
    config = IdPConfig()
    config.load(
        {
            "entityid": f"{base}/idp",
            "service": {
                "idp": {
                    "endpoints": {
                        "single_sign_on_service": [(f"{base}/sso/redirect", BINDING_HTTP_REDIRECT)]
                    },
                    "name_id_format": [NAMEID_FORMAT_EMAILADDRESS],
                    "policy": {"default": {"lifetime": {"minutes": 5}, "attribute_restrictions": None}},
                    "want_authn_requests_signed": signs_requests,
                }
            },
            "key_file": key,
            "cert_file": cert,
            "metadata": {"local": [sp_metadata] if sp_metadata else []},
            "xmlsec_binary": "/usr/bin/xmlsec1",
            "delete_tmpfiles": True,
        }
    )
    return Server(config=config)


def shifted(stamp, delta):
    when = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ") + delta
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


class Idp:
    def __init__(self, port, key, cert, sp_metadata_url, users):
        self.base = f"http://127.0.0.1:{port}"
        self.users = set(users)
        self.key, self.cert = key, cert
        self.workdir = tempfile.mkdtemp(prefix="saml-idp-")
        sp_metadata = os.path.join(self.workdir, "sp.xml")
        with urllib.request.urlopen(sp_metadata_url, timeout=10) as answer:
            with open(sp_metadata, "wb") as out:
                out.write(answer.read())
        self.server = server_for(self.base, key, cert, sp_metadata)
        make_keys(self.workdir, "rogue")
        self.rogue_key = os.path.join(self.workdir, "rogue.key")
        self.rogue_cert = os.path.join(self.workdir, "rogue.pem")
        self.pending = {}
        self.tamper = None
        self.lock = threading.Lock()

    def signs_in(self, email, password):
        if self.users == {"*"}:
            return "@" in email and password != ""
        return email in self.users and password == PASSWORD

    def next_tampering(self):
        with self.lock:
            tamper, self.tamper = self.tamper, None
            return tamper

    def response(self, request, email, tamper):
        """The signed response to `request` for `email`, as the tampering says."""
        mode = tamper["mode"] if tamper else None
        name = email + ".evil.example" if mode == "comment" else email
        created = self.server.create_authn_response(
            identity={"mail": [email]},
            in_response_to=request["id"],
            destination=request["acs"],
            sp_entity_id=request["sp"],
            name_id=NameID(format=NAMEID_FORMAT_EMAILADDRESS, text=name),
            authn={"class_ref": AUTHN_PASSWORD_PROTECTED, "authn_auth": f"{self.base}/idp"},
            sign_response=False,
            sign_assertion=False,
        )
        response = samlp.response_from_string(str(created))
        assertion = response.assertion[0] if isinstance(response.assertion, list) else response.assertion
        confirmations = assertion.subject.subject_confirmation
        if mode == "audience":
            assertion.conditions.audience_restriction[0].audience[0].text = "https://other.example/sp"
        elif mode == "destination":
            response.destination = "http://127.0.0.1:9/elsewhere"
            for confirmation in confirmations:
                confirmation.subject_confirmation_data.recipient = "http://127.0.0.1:9/elsewhere"
        elif mode == "destination_signed":
            response.destination = "http://127.0.0.1:9/elsewhere"
        elif mode in ("unsolicited", "other_flow"):
            other = None if mode == "unsolicited" else "_" + "0" * 64
            response.in_response_to = other
            for confirmation in confirmations:
                confirmation.subject_confirmation_data.in_response_to = other
        elif mode == "expired":
            past = -datetime.timedelta(hours=2)
            response.issue_instant = shifted(response.issue_instant, past)
            assertion.issue_instant = shifted(assertion.issue_instant, past)
            assertion.conditions.not_before = shifted(assertion.conditions.not_before, past)
            assertion.conditions.not_on_or_after = shifted(assertion.conditions.not_on_or_after, past)
            for confirmation in confirmations:
                data = confirmation.subject_confirmation_data
                data.not_on_or_after = shifted(data.not_on_or_after, past)
            for statement in assertion.authn_statement:
                statement.authn_instant = shifted(statement.authn_instant, past)

        if mode in ("encrypted", "encrypted_rsa15"):
            # Encrypted to the service provider's certificate from its metadata; the Response's
            # signature covers the ciphertext.
            key_transport = RSA_1_5 if mode == "encrypted_rsa15" else RSA_OAEP_MGF1P
            _, sp_cert = self.server.metadata.certs(request["sp"], "any", "encryption")[0]
            wrapped, _ = get_pem_wrapped_unwrapped(sp_cert)
            cert_file = os.path.join(self.workdir, "sp-encryption.pem")
            with open(cert_file, "w") as out:
                out.write(wrapped)
            template = pre_encryption_part(msg_enc=AES128_CBC, key_enc=key_transport)
            encrypted = self.server.sec.encrypt_assertion(response, cert_file, template, key_type="aes-128-cbc")
            response = samlp.response_from_string(encrypted)
            mode = "response_signed"
        signed_node = response if mode in ("response_signed", "destination_signed") else assertion
        key, cert = self.key, pem_body(self.cert)
        if mode == "other_key":
            key, cert = self.rogue_key, None
        elif mode == "keyinfo_only":
            key, cert = self.rogue_key, pem_body(self.rogue_cert)
        sign_alg, digest_alg = (SIG_RSA_SHA1, DIGEST_SHA1) if mode == "sha1" else (SIG_RSA_SHA256, DIGEST_SHA256)
        if mode == "unsigned":
            xml = str(response)
        else:
            signed_node.signature = pre_signature_part(
                signed_node.id, cert, 1, digest_alg=digest_alg, sign_alg=sign_alg
            )
            xml = self.server.sec.sign_statement(
                str(response), class_name(signed_node), key_file=key, node_id=signed_node.id
            )
        return self.after_signing(xml, mode, email, tamper)

    def after_signing(self, xml, mode, email, tamper):
        """What an attacker does to a signed document."""
        if mode == "comment":
            return xml.replace(f">{email}.evil.example<", f">{email}<!---->.evil.example<")
        if mode in ("wrap_sibling", "wrap_extension"):
            found = re.search(r"<(\w+:)?Assertion\b.*</(\w+:)?Assertion>", xml, re.S)
            signed = found.group(0)
            evil = re.sub(r"<(\w+:)?Signature\b.*</(\w+:)?Signature>", "", signed, flags=re.S)
            evil = re.sub(r'\bID="[^"]+"', 'ID="_evil"', evil, count=1)
            evil = evil.replace(f">{email}<", ">dave@mail.example<")
            if mode == "wrap_sibling":
                return xml.replace(signed, signed + evil)
            extensions = (
                '<samlp:Extensions xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol">'
                + signed
                + "</samlp:Extensions>"
            )
            return xml.replace(signed, extensions + evil)
        if mode == "doctype_entities":
            declaration = f'<!DOCTYPE Response [<!ENTITY who "{email}">]>'
            body = xml.replace(f">{email}<", ">&who;<")
            return declaration + strip_declaration(body)
        if mode == "doctype_external":
            url = tamper.get("url", "http://127.0.0.1:9/")
            declaration = f'<!DOCTYPE Response SYSTEM "{url}dtd" [<!ENTITY % ext SYSTEM "{url}ext"> %ext;]>'
            return declaration + strip_declaration(xml)
        return xml


def strip_declaration(xml):
    return re.sub(r"^<\?xml[^>]*\?>\s*", "", xml)


def login_page(key, error=""):
    warning = f'<p class="error">{html.escape(error)}</p>' if error else ""
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Acme sign-in (SAML)</title>
<style>body{{font-family:sans-serif;max-width:24em;margin:4em auto}}label,input{{display:block;width:100%;margin:.4em 0}}
.error{{color:#b00}}</style></head>
<body><h1>Acme sign-in</h1><p>SAML identity provider (pysaml2)</p>{warning}
<form method="post" action="/sso/login">
<input type="hidden" name="key" value="{html.escape(key)}">
<label>E-mail <input name="login" autocomplete="username"></label>
<label>Password <input name="password" type="password" autocomplete="current-password"></label>
<input type="submit" value="Sign in">
</form></body></html>"""


def handler_for(idp, controls):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def answer(self, status, body, content_type="text/html; charset=utf-8"):
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def form(self):
            length = int(self.headers.get("Content-Length") or 0)
            return {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}

        def do_GET(self):
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path == "/metadata":
                from saml2.metadata import entity_descriptor

                return self.answer(200, str(entity_descriptor(idp.server.config)), "application/samlmetadata+xml")
            if url.path != "/sso/redirect":
                return self.answer(404, "not found", "text/plain")
            try:
                parsed = idp.server.parse_authn_request(
                    query["SAMLRequest"],
                    BINDING_HTTP_REDIRECT,
                    relay_state=query.get("RelayState"),
                    sigalg=query.get("SigAlg"),
                    signature=query.get("Signature"),
                )
                request = parsed.message
                args = idp.server.response_args(request, [BINDING_HTTP_POST])
            except Exception as error:  # pysaml2 raises many kinds; all are a bad request
                return self.answer(400, f"bad AuthnRequest: {type(error).__name__}", "text/plain")
            key = secrets.token_urlsafe(16)
            with idp.lock:
                idp.pending[key] = {
                    "id": request.id,
                    "acs": args["destination"],
                    "sp": args["sp_entity_id"],
                    "relay_state": query.get("RelayState", ""),
                    "signed": bool(query.get("Signature")),
                }
            self.answer(200, login_page(key))

        def do_POST(self):
            url = urlparse(self.path)
            if url.path.startswith("/__test/tamper/") and controls:
                mode = url.path.rsplit("/", 1)[1]
                if mode not in TAMPERING:
                    return self.answer(404, "unknown mode", "text/plain")
                length = int(self.headers.get("Content-Length") or 0)
                extra = json.loads(self.rfile.read(length) or b"{}")
                with idp.lock:
                    idp.tamper = dict(extra, mode=mode)
                return self.answer(200, "{}", "application/json")
            if url.path == "/__test/pending" and controls:
                with idp.lock:
                    signed = [p["signed"] for p in idp.pending.values()]
                return self.answer(200, json.dumps({"signed": signed}), "application/json")
            if url.path != "/sso/login":
                return self.answer(404, "not found", "text/plain")
            form = self.form()
            with idp.lock:
                request = idp.pending.get(form.get("key", ""))
            if request is None:
                return self.answer(400, "no such sign-in", "text/plain")
            email = form.get("login", "").strip()
            if not idp.signs_in(email, form.get("password", "")):
                return self.answer(200, login_page(form["key"], "Wrong e-mail or password."))
            with idp.lock:
                idp.pending.pop(form["key"], None)
            xml = idp.response(request, email, idp.next_tampering())
            post = idp.server.apply_binding(
                BINDING_HTTP_POST, xml, request["acs"], request["relay_state"], response=True
            )
            self.answer(200, post["data"])

    return Handler


def main(argv):
    if len(argv) == 4 and argv[1] == "keys":
        make_keys(argv[2], argv[3])
        return
    if len(argv) == 6 and argv[1] == "metadata":
        from saml2.metadata import entity_descriptor

        server = server_for(f"http://127.0.0.1:{int(argv[2])}", argv[3], argv[4])
        with open(argv[5], "w") as out:
            out.write(str(entity_descriptor(server.config)))
        return
    if len(argv) != 7 or argv[1] != "serve":
        sys.exit(__doc__)
    port, key, cert, sp_metadata_url, users = int(argv[2]), argv[3], argv[4], argv[5], argv[6]
    idp = Idp(port, key, cert, sp_metadata_url, [u.strip() for u in users.split(",") if u.strip()])
    controls = os.environ.get("SAML_TEST_CONTROLS") == "1"
    httpd = ThreadingHTTPServer(("127.0.0.1", port), handler_for(idp, controls))
    print(f"ready {port}", flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    main(sys.argv)
