"""Outbound proxy settings from the environment: which variable wins, NO_PROXY matching, refused proxy
URLs, and credentials that never show."""

from __future__ import annotations

import pytest

from modelroute_sidecar.proxies import ProxyConfig

ENV = {"HTTPS_PROXY": "http://user:s3cret@proxy.corp:3128", "HTTP_PROXY": "proxy.corp:8080"}


@pytest.mark.parametrize(
    ("no_proxy", "scheme", "host", "port", "proxied"),
    [
        ("", "https", "api.openai.com", 443, True),
        ("", "http", "vllm.internal", 80, True),
        ("*", "https", "api.openai.com", 443, False),
        ("api.openai.com", "https", "api.openai.com", 443, False),
        ("api.openai.com", "https", "API.OpenAI.com.", 443, False),  # case and a trailing dot
        ("openai.com", "https", "api.openai.com", 443, False),  # a domain covers its subdomains
        (".openai.com", "https", "api.openai.com", 443, False),
        ("*.openai.com", "https", "api.openai.com", 443, False),
        ("openai.com", "https", "notopenai.com", 443, True),  # a suffix is matched on a label boundary
        ("10.0.0.0/8", "http", "10.1.2.3", 8000, False),
        ("10.0.0.0/8", "http", "11.1.2.3", 8000, True),
        ("10.0.0.0/8", "http", "ten.example", 8000, True),
        ("fd00::/8", "http", "fd12::1", 8000, False),
        ("192.168.1.5", "http", "192.168.1.5", 80, False),
        ("vllm.internal:8000", "http", "vllm.internal", 8000, False),
        ("vllm.internal:8000", "http", "vllm.internal", 9000, True),
        ("[::1]:8000", "http", "::1", 8000, False),
        (" a.example , b.example ", "https", "b.example", 443, False),
    ],
)
def test_no_proxy(no_proxy: str, scheme: str, host: str, port: int, proxied: bool) -> None:
    config = ProxyConfig.from_environ({**ENV, "NO_PROXY": no_proxy})
    assert (config.for_origin(scheme, host, port) is not None) is proxied


def test_each_scheme_has_its_proxy_and_lower_case_wins() -> None:
    config = ProxyConfig.from_environ({**ENV, "https_proxy": "http://lower:1"})
    https = config.for_origin("https", "x.example", 443)
    http = config.for_origin("http", "x.example", 80)
    assert https is not None and https.address == "lower:1" and not https.authorization
    assert http is not None and http.address == "proxy.corp:8080"
    assert not ProxyConfig.from_environ({}).enabled
    assert ProxyConfig.from_environ({"HTTP_PROXY": "http://p:1"}).for_origin("https", "x", 443) is None


def test_credentials_come_from_the_url_and_never_show() -> None:
    config = ProxyConfig.from_environ(ENV)
    proxy = config.for_origin("https", "x.example", 443)
    assert proxy is not None and proxy.authorization == "Basic dXNlcjpzM2NyZXQ="  # user:s3cret
    assert "s3cret" not in repr(config) and "s3cret" not in config.describe()
    assert "with credentials" in config.describe()


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("https://proxy:443", "HTTPS_PROXY: proxy scheme 'https' is not supported"),
        ("socks5://proxy:1080", "HTTPS_PROXY: proxy scheme 'socks5'"),
        ("http://proxy:99999", "HTTPS_PROXY: the proxy URL has an invalid port"),
        ("http://:3128", "HTTPS_PROXY: the proxy URL has no host"),
    ],
)
def test_unusable_proxy_urls_are_refused(value: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        ProxyConfig.from_environ({"HTTPS_PROXY": value})
