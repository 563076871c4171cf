"""The collector's two HTTP clients, and the TLS policy of each. No request is made here.

- **Appliances** ship self-signed certificates (DESIGN §6): ``QRNG_APPLIANCE_CA_FILE`` trusts
  one; ``QRNG_APPLIANCE_TLS_VERIFY=false`` is allowed with a loud warning, and so is plain
  ``http://`` off loopback, since anyone on that path can feed the collector.
- **Gateways** are reached over TLS 1.2 or newer, optionally mutual (``QRNG_GATEWAY_*``).

The :class:`~qrng_dd.collector.service.Collector` owns both clients and closes them.
"""

from __future__ import annotations

import ssl

import httpx
import structlog

from qrng_dd.config import CollectorSettings

log = structlog.get_logger("qrng_dd.collector")


def appliance_client(settings: CollectorSettings) -> httpx.AsyncClient:
    verify: ssl.SSLContext | bool = True
    if settings.appliance_ca_file is not None:
        verify = ssl.create_default_context(cafile=str(settings.appliance_ca_file))
    if not settings.appliance_tls_verify:
        log.warning(
            "appliance_tls_unverified",
            message="QRNG_APPLIANCE_TLS_VERIFY=false: appliance certificates are NOT checked; "
            "anyone on the path can feed this collector. Use QRNG_APPLIANCE_CA_FILE instead.",
        )
        verify = False
    for url in settings.appliance_urls:
        if url.startswith("http://") and not _loopback(url):
            log.warning(
                "appliance_plain_http",
                appliance=url,
                message="plain HTTP to an appliance off loopback: use https://",
            )
    return httpx.AsyncClient(
        verify=verify,
        timeout=httpx.Timeout(settings.fetch_timeout_ms / 1000),
        limits=httpx.Limits(max_connections=max(4, 2 * len(settings.appliance_urls))),
    )


def _loopback(url: str) -> bool:
    host = httpx.URL(url).host
    return host in ("localhost", "::1") or host.startswith("127.")


def push_client(settings: CollectorSettings) -> httpx.AsyncClient:
    """The client for HTTP(S) push targets: TLS 1.2 or newer, optionally mutual.

    ``QRNG_GATEWAY_CA_FILE`` replaces the trust store for the gateways' certificates. Without
    it the gateways are checked against the same store as before (httpx's default: certifi,
    or ``SSL_CERT_FILE``/``SSL_CERT_DIR``), so adding only a client certificate changes who we
    are, not whom we trust. The client certificate is offered to gateways that ask for one
    (``QRNG_TLS_CLIENT_CA_FILE`` there). Settings validation already loaded these files, so a
    bad one stopped the process with one line before it got here.
    """
    context = (
        ssl.create_default_context(cafile=str(settings.gateway_ca_file))
        if settings.gateway_ca_file is not None
        else httpx.create_ssl_context()
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.gateway_client_cert_file is not None:
        context.load_cert_chain(settings.gateway_client_cert_file, settings.gateway_client_key_file)
    tls_files = (
        settings.gateway_ca_file,
        settings.gateway_client_cert_file,
        settings.gateway_client_key_file,
    )
    https = any(t.scheme == "https" for t in settings.targets)
    if any(path is not None for path in tls_files) and not https:
        # Not an error: a UDP-only collector may share an env file with an HTTPS one. But a
        # forgotten https:// would send in the clear what the operator meant to protect.
        log.warning(
            "push_tls_unused",
            message="QRNG_GATEWAY_CA_FILE / QRNG_GATEWAY_CLIENT_CERT_FILE are set, but no "
            "QRNG_GATEWAY_PUSH_URL target is https://: they are not used",
        )
    return httpx.AsyncClient(
        verify=context,
        timeout=httpx.Timeout(settings.fetch_timeout_ms / 1000, connect=5.0),
        limits=httpx.Limits(max_connections=len(settings.targets) * 2),
    )
