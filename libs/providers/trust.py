"""Which certificate authorities outbound HTTPS trusts: the system's store, else certifi's bundle.

:func:`trust_context` trusts what the host's other programs trust, so a corporate CA installed on the host,
or named by ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``, is trusted too:

* on macOS and Windows, a ``truststore`` context: the system's own verifier;
* on Linux, the store ``truststore`` would use — OpenSSL's default locations (which honour ``SSL_CERT_FILE``
  and ``SSL_CERT_DIR``), else the distribution's bundle — loaded once into a standard context. ``truststore``
  itself reloads that bundle for every new connection (about 20 ms of CPU each, measured here, against
  5 µs), which a sender opening hundreds of connections at once cannot afford, for the same decisions;
* a Linux image without any CA store (a slim image without ``ca-certificates``) falls back to certifi's
  bundle, which httpx ships with, so graph.facebook.com still verifies there.

The variables are read when the context is made (a client's first TLS connection).
"""

from __future__ import annotations

import os
import re
import ssl
import sys

import certifi
import truststore

#: Where Linux distributions keep their CA bundle, as ``truststore`` looks for it when OpenSSL's defaults are
#: empty (Alpine/Arch/Fedora, newer Fedora/RHEL, older Fedora/RHEL/CentOS, Debian/Ubuntu, SUSE).
CA_FILE_CANDIDATES = (
    "/etc/ssl/cert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/pki/tls/cert.pem",
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/ssl/ca-bundle.pem",
)
_HASHED_CERT = re.compile(r"^[0-9a-fA-F]{8}\.[0-9]$")


def openssl_defaults_usable() -> bool:
    """Whether OpenSSL's default CA file exists, or its CA directory holds certificates (``truststore``'s test)."""
    paths = ssl.get_default_verify_paths()
    if paths.cafile:
        return True
    return bool(paths.capath) and os.path.isdir(paths.capath) and any(map(_HASHED_CERT.match, os.listdir(paths.capath)))


def trust_context() -> ssl.SSLContext:
    """A client TLS context verifying against the system trust store, or certifi's bundle when there is none."""
    if not sys.platform.startswith("linux"):
        return truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context = ssl.create_default_context()  # loads OpenSSL's default locations (SSL_CERT_FILE, SSL_CERT_DIR)
    if not openssl_defaults_usable():
        found = next((path for path in CA_FILE_CANDIDATES if os.path.isfile(path)), None)
        context.load_verify_locations(cafile=found or certifi.where())
    return context
