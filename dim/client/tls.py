"""Certificate verification for a client's connections to the gateway and to TLS nodes.

A client trusts either the system's certificate authorities (the default) or the ones in a
PEM file it is given (``dim-chat --ca FILE``, for a cluster with its own CA).  Both the HTTPS
gateway and a node whose route answer says ``tls: true`` are then verified against that trust
root and the host name or IP address the client was told to connect to.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.internet.endpoints import wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.ssl import (Certificate, optionsForClientTLS, platformTrust,
                                  trustRootFromCertificates)
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

if TYPE_CHECKING:
    from twisted.internet._sslverify import IOpenSSLTrustRoot

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL)


def load_trust_root(ca_file: str | Path | None = None) -> IOpenSSLTrustRoot:
    """The certificate authorities to trust: every certificate of the PEM file ``ca_file``,
    or the system's when it is None.

    Raises ValueError when the file holds no PEM certificate (OSError if it cannot be read).
    """
    if ca_file is None:
        return platformTrust()
    data = Path(ca_file).read_bytes()
    blocks = _PEM_CERTIFICATE.findall(data)
    if not blocks:
        raise ValueError(f"{ca_file} holds no PEM certificate")
    return trustRootFromCertificates([Certificate.loadPEM(block) for block in blocks])


def tls_endpoint(endpoint: IStreamClientEndpoint, host: str,
                 trust_root: IOpenSSLTrustRoot | None = None) -> IStreamClientEndpoint:
    """``endpoint`` (a TCP one to ``host``) with TLS over it, verifying the peer's
    certificate against ``trust_root`` (the system's by default) and ``host``."""
    root = trust_root if trust_root is not None else platformTrust()
    return wrapClientTLS(optionsForClientTLS(host, trustRoot=root), endpoint)


def https_agent(reactor: Any, trust_root: IOpenSSLTrustRoot | None = None,
                persistent: bool = True) -> Agent:
    """An HTTP agent that verifies HTTPS servers against ``trust_root`` (for
    :class:`~dim.client.gateway.GatewayClient`'s ``request_options={"agent": ...}``)."""
    policy = BrowserLikePolicyForHTTPS(trustRoot=trust_root)
    pool = HTTPConnectionPool(reactor, persistent=persistent)
    return Agent(reactor, contextFactory=policy, pool=pool)
