"""Pure parts of "names are proven before they receive mail" (issue 9): the host's
reserved names, the delegation comparison, and an unproven domain rendered as absent."""

from __future__ import annotations

from dataclasses import replace

import pytest
from mapview import maps
from test_render import domain, mailbox

from mailforge.backends.postfix_dovecot.render import render
from mailforge.config import Config, DnsConfig, HostConfig, PowerDnsConfig
from mailforge.dns.providers.base import Delegation
from mailforge.models import DomainState
from mailforge.reserved import clashes, refusals, reserved_names


def _cfg() -> Config:
    return Config(host=HostConfig(mx_hostname="mail.example.net"),
                  dns=DnsConfig(mx_hostname="mail.example.net.", web_hostname="www.host.example",
                                powerdns=PowerDnsConfig(nameservers=("ns1.dns.example.",
                                                                     "NS2.dns.example"))))


def test_reserved_names_come_from_the_config_canonical_and_without_addresses() -> None:
    names = reserved_names(_cfg())
    assert names == ("mail.example.net", "ns1.dns.example", "ns2.dns.example",
                     "www.host.example")  # 127.0.0.1 endpoints name no domain


@pytest.mark.parametrize("name", ["mail.example.net", "x.mail.example.net",
                                  "a.b.mail.example.net", "example.net", "dns.example",
                                  "ns1.dns.example", "host.example"])
def test_names_at_under_or_above_a_host_name_are_refused(name: str) -> None:
    assert clashes(name, reserved_names(_cfg())), name


@pytest.mark.parametrize("name", ["other.net", "other.example.net", "mail.example.org",
                                  "xmail.example.net", "mail.example.network",
                                  "ns3.dns.example.org",
                                  "example.com"])
def test_siblings_and_look_alikes_are_not_reserved(name: str) -> None:
    assert not clashes(name, reserved_names(_cfg())), name


def test_refusals_name_the_field() -> None:
    assert refusals(["ok.test", "mail.example.net"], ["mail.example.net"]) == [
        "domains[1]: mail.example.net is at, under or above mail.example.net, a name of "
        "this mail host"]


def test_delegation_needs_every_wanted_nameserver() -> None:
    ns = ("ns1.p.example.", "ns2.p.example.")
    assert Delegation(ns, ns).verified
    assert Delegation(ns, (*ns, "ns3.other.example.")).verified
    assert not Delegation(ns, ("ns1.p.example.",)).verified
    assert not Delegation(ns, ()).verified
    # No wanted nameservers (manual) proves nothing, whatever is found.
    assert not Delegation((), ("ns1.p.example.",)).verified


def test_an_unproven_domain_is_rendered_exactly_like_an_absent_one() -> None:
    unproven = DomainState(domain(ownership_verified_at=None), (mailbox("alice"),))
    absent = DomainState(domain(backend_enabled=False), (mailbox("alice"),))
    assert not unproven.present
    assert render(unproven) == render(absent)
    assert maps(unproven).domains == "" and render(unproven).users == ()
    proven = DomainState(replace(unproven.domain, ownership_verified_at=unproven.domain
                                 .created_at), unproven.mailboxes)
    assert proven.present and maps(proven).domains == "example.test OK\n"
