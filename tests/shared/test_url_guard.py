import ipaddress

import pytest

from shared.errors import ErrorCode, IdentityBodyError
from shared.url_guard import (
    WebhookResolutionError,
    check_webhook_url,
    embedded_ipv4,
    refusal_reason,
    resolve_webhook_target,
)


def fake_dns(table):
    calls = []

    def resolve(host, port):
        calls.append((host, port))
        if host not in table:
            raise WebhookResolutionError(host)
        return table[host]

    resolve.calls = calls
    return resolve


def _refused(url, allow=(), resolver=None):
    with pytest.raises(IdentityBodyError) as info:
        resolve_webhook_target(url, allow, resolver or fake_dns({}))
    assert info.value.code == ErrorCode.WEBHOOK_URL_REFUSED
    assert info.value.field == "webhook_url"
    return info.value.message


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://127.8.9.10:8080/hook",
        "http://[::1]/hook",
        "http://10.0.0.1/hook",
        "http://172.16.3.4/hook",
        "http://192.168.1.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.100.100.200/",
        "http://0.0.0.0/",
        "http://[::]/",
        "http://224.0.0.1/",
        "http://240.0.0.1/",
        "http://[fe80::1]/",
        "http://[fd00:ec2::254]/",
        "http://[ff02::1]/",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[::ffff:a9fe:a9fe]/",
        "http://[::127.0.0.1]/",
        "http://[2002:7f00:1::]/",
        "http://[2002:a00:1::]/",
        "http://[64:ff9b::a00:1]/",
        "http://[64:ff9b:1::10.0.0.1]/",
    ],
)
def test_private_literals_are_refused_without_dns(url):
    resolver = fake_dns({})
    _refused(url, resolver=resolver)
    assert resolver.calls == []


def test_hostname_resolving_to_private_address_is_refused():
    message = _refused("https://evil.example/hook", resolver=fake_dns({"evil.example": ["10.1.2.3"]}))
    assert "10.1.2.3" in message and "private" in message


def test_any_private_answer_refuses_a_mixed_resolution():
    dns = fake_dns({"mixed.example": ["93.184.215.14", "127.0.0.1"]})
    _refused("https://mixed.example/", resolver=dns)


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/x", "file:///etc/passwd", "gopher://x/", "javascript:alert(1)", "http:///nohost",
     "https://user:pw@example.com/", "http://example.com:99999/", "http://" + "a" * 3000 + ".com/"],
)
def test_bad_shapes_are_refused(url):
    _refused(url)


def test_public_host_is_pinned_to_first_answer():
    dns = fake_dns({"hooks.example.com": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]})
    target = resolve_webhook_target("HTTPS://hooks.example.com/idbody?x=1", [], dns)
    assert (target.scheme, target.host, target.port, target.address) == (
        "https", "hooks.example.com", 443, "93.184.215.14"
    )
    assert dns.calls == [("hooks.example.com", 443)]


def test_public_ipv6_embedding_public_ipv4_is_allowed():
    target = resolve_webhook_target("http://[2002:5db8:d70e::1]:8080/", [], fake_dns({}))
    assert target.address == "2002:5db8:d70e::1" and target.port == 8080


def test_allow_list_lets_loopback_through_for_development():
    target = resolve_webhook_target("http://127.0.0.1:9000/hook", ["127.0.0.1"], fake_dns({}))
    assert target.address == "127.0.0.1"
    target = resolve_webhook_target("http://LocalHost:9000/", ["localhost"], fake_dns({"localhost": ["::1"]}))
    assert target.address == "::1"
    _refused("http://127.0.0.2:9000/hook", allow=["127.0.0.1"])


def test_unresolvable_name_raises_resolution_error():
    with pytest.raises(WebhookResolutionError):
        resolve_webhook_target("https://nowhere.invalid/", [], fake_dns({}))


def test_embedded_ipv4_forms():
    assert embedded_ipv4(ipaddress.ip_address("::ffff:10.0.0.1")) == ipaddress.ip_address("10.0.0.1")
    assert embedded_ipv4(ipaddress.ip_address("64:ff9b::7f00:1")) == ipaddress.ip_address("127.0.0.1")
    assert embedded_ipv4(ipaddress.ip_address("2606:2800::1")) is None
    assert refusal_reason(ipaddress.ip_address("93.184.215.14")) is None


@pytest.mark.parametrize("url", ["http://[::1", "http://[x]/", "https://[127.0.0.1]/", "http://a]b/",
                                 "http://exa mple.com:99999/", "gopher://example.com/"])
def test_malformed_webhook_urls_are_refused_with_a_code_at_submit(url):
    with pytest.raises(IdentityBodyError) as caught:
        check_webhook_url(url)
    assert caught.value.code is ErrorCode.WEBHOOK_URL_REFUSED and caught.value.field == "webhook_url"


def test_submit_check_refuses_private_literals_and_never_resolves_names():
    with pytest.raises(IdentityBodyError):
        check_webhook_url("http://10.0.0.1/hook")
    assert check_webhook_url("http://127.0.0.1:9/hook", allow_hosts=["127.0.0.1"]) == "http://127.0.0.1:9/hook"
    # a name is left to delivery, which resolves, checks every address and pins one: a name that
    # does not resolve (.invalid never does) passes here without a lookup
    assert check_webhook_url(" https://hooks.example.invalid/x ") == "https://hooks.example.invalid/x"


@pytest.mark.parametrize("host", ["127.1", "0", "0x7f.0.0.1", "2130706433", "0177.0.0.1", "0x7f000001", "10.1",
                                  "localhost", "Api.LocalHost"])
def test_addresses_in_resolver_spellings_and_localhost_are_refused_at_submit_without_dns(host):
    with pytest.raises(IdentityBodyError) as info:
        check_webhook_url(f"http://{host}:9000/hook")
    assert info.value.code == ErrorCode.WEBHOOK_URL_REFUSED and info.value.field == "webhook_url"


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0x7f.0.0.1"])
def test_delivery_reads_resolver_spellings_as_the_address_they_mean(host):
    resolver = fake_dns({})
    assert "127.0.0.1" in _refused(f"http://{host}/hook", resolver=resolver)
    assert resolver.calls == []  # an address, not a name: never looked up


def test_names_that_only_look_numeric_are_still_names():
    assert check_webhook_url("https://1e100.net/hook") == "https://1e100.net/hook"
    assert check_webhook_url("https://0x7f.example.com/hook") == "https://0x7f.example.com/hook"
