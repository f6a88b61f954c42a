"""A local fake of the Cloudflare API v4, faithful to provider-contracts.md: bearer
auth (403 code 10000), the {success, errors, messages, result, result_info} envelope,
zones by name, paginated dns_records (per_page, result_info.count), create errors 81057
/81058, delete 81044, and injected faults (429 with Retry-After, 5xx, slow answers).
It also answers DNS queries (UDP) for its zones from the same records, standing in for
Cloudflare's authoritative nameservers so verification can run."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import deque
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from aiohttp import web

from mailforge.sandbox.ports import pick_ports


def envelope(result: Any, success: bool = True, errors: list[dict[str, Any]] | None = None,
             info: dict[str, Any] | None = None) -> dict[str, Any]:
    body = {"success": success, "errors": errors or [], "messages": [], "result": result}
    if info is not None:
        body["result_info"] = info
    return body


def err(status: int, code: int, message: str, headers: dict[str, str] | None = None
        ) -> web.Response:
    return web.json_response(envelope(None, False, [{"code": code, "message": message}]),
                             status=status, headers=headers)


def presentation(rec: dict[str, Any]) -> str:
    t = rec["type"]
    if t == "MX":
        return f"{rec['priority']} {rec['content']}."
    if t == "SRV":
        d = rec["data"]
        return f"{d['priority']} {d['weight']} {d['port']} {d['target']}."
    if t == "CNAME":
        return rec["content"] + "."
    return str(rec["content"])


class CloudflareFake:
    def __init__(self, token: str) -> None:
        self.token = token
        self.zones: dict[str, dict[str, Any]] = {}
        self.records: dict[str, list[dict[str, Any]]] = {}
        # Faults consumed one per API request: "429", "500", "503", "slow".
        self.faults: deque[str] = deque()
        self.requests = 0
        self.fault_hits: list[str] = []
        self.slow_seconds = 3.0
        ports = pick_ports(["api", "dns"], udp=("dns",))
        self.port = ports["api"]
        self.dns_port = ports["dns"]
        self._runner: web.AppRunner | None = None
        self._transport: asyncio.DatagramTransport | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/client/v4"

    def add_zone(self, name: str) -> str:
        zid = uuid.uuid4().hex
        self.zones[zid] = {"id": zid, "name": name, "status": "active",
                           "name_servers": ["ada.ns.cloudflare.com", "bob.ns.cloudflare.com"]}
        self.records[zid] = []
        return zid

    def zone_id(self, name: str) -> str:
        return next(z for z, v in self.zones.items() if v["name"] == name)

    def add_record(self, zone: str, **fields: Any) -> None:
        """An operator's own record, created outside mailforge."""
        self.records[self.zone_id(zone)].append({"id": uuid.uuid4().hex, "ttl": 1, **fields})

    # ------------------------------------------------------------------ HTTP

    @web.middleware
    async def _mw(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests += 1
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return err(403, 10000, "Authentication error")
        if self.faults:
            fault = self.faults.popleft()
            self.fault_hits.append(fault)
            if fault == "429":
                return err(429, 971, "Please wait and consider throttling your request "
                           "speed", {"Retry-After": "1"})
            if fault in ("500", "502", "503"):
                return err(int(fault), 10000, "Internal error")
            if fault == "slow":
                await asyncio.sleep(self.slow_seconds)
        result: web.StreamResponse = await handler(request)
        return result

    async def list_zones(self, request: web.Request) -> web.Response:
        name = request.query.get("name")
        zones = [z for z in self.zones.values() if name is None or z["name"] == name]
        return web.json_response(envelope(zones, info={
            "page": 1, "per_page": 20, "count": len(zones), "total_count": len(zones),
            "total_pages": 1}))

    async def list_records(self, request: web.Request) -> web.Response:
        zid = request.match_info["zone"]
        if zid not in self.records:
            return err(404, 7003, "Could not route to /zones, perhaps your object "
                       "identifier is invalid?")
        try:
            page = int(request.query.get("page", "1"))
            per_page = int(request.query.get("per_page", "100"))
        except ValueError:
            return err(400, 1004, "DNS Validation Error")
        per_page = max(5, min(per_page, 5000))
        recs = self.records[zid]
        if "type" in request.query:
            recs = [r for r in recs if r["type"] == request.query["type"]]
        if "name" in request.query:
            recs = [r for r in recs if r["name"] == request.query["name"]]
        chunk = recs[(page - 1) * per_page: page * per_page]
        total_pages = max(1, -(-len(recs) // per_page))
        return web.json_response(envelope(chunk, info={
            "page": page, "per_page": per_page, "count": len(chunk),
            "total_count": len(recs), "total_pages": total_pages}))

    async def create_record(self, request: web.Request) -> web.Response:
        zid = request.match_info["zone"]
        if zid not in self.records:
            return err(404, 7003, "Could not route to /zones")
        try:
            body = json.loads(await request.read())
        except ValueError:
            return err(400, 9207, "Request body is invalid.")
        rtype, name = body.get("type"), body.get("name")
        if rtype not in ("A", "AAAA", "CNAME", "MX", "TXT", "SRV", "NS", "CAA"):
            return err(400, 9000, "DNS record type is invalid.")
        if not isinstance(name, str) or not name:
            return err(400, 9005, "Content for record name is invalid.")
        ttl = body.get("ttl", 1)
        if not (ttl == 1 or 60 <= int(ttl) <= 86400):
            return err(400, 9021, "Invalid TTL. Must be between 60 and 86400, or 1 for "
                       "automatic.")
        rec = {"id": uuid.uuid4().hex, "type": rtype, "name": name.lower(), "ttl": ttl,
               "proxied": False, "comment": body.get("comment")}
        if rtype == "SRV":
            if not isinstance(body.get("data"), dict):
                return err(400, 9101, "SRV record data is invalid.")
            rec["data"] = body["data"]
        else:
            content = body.get("content")
            if not isinstance(content, str) or not content:
                return err(400, 9009, "Content for record is invalid.")
            if rtype == "TXT":
                try:
                    dns.rdata.from_text("IN", "TXT", content)
                except Exception:
                    return err(400, 9009, "Content for TXT record is invalid (strings "
                               "longer than 255 bytes must be split).")
            rec["content"] = content
        if rtype == "MX":
            if "priority" not in body:
                return err(400, 9101, "MX priority is required.")
            rec["priority"] = body["priority"]
        for other in self.records[zid]:
            if (other["type"], other["name"]) == (rtype, rec["name"]) and \
                    presentation(other) == presentation(rec):
                return err(400, 81058, "An identical record already exists.")
            if rtype == "CNAME" and other["name"] == rec["name"]:
                return err(400, 81053, "An A, AAAA, or CNAME record with that host "
                           "already exists.")
        self.records[zid].append(rec)
        return web.json_response(envelope(rec))

    async def delete_record(self, request: web.Request) -> web.Response:
        zid, rid = request.match_info["zone"], request.match_info["rid"]
        recs = self.records.get(zid, [])
        for r in recs:
            if r["id"] == rid:
                recs.remove(r)
                return web.json_response(envelope({"id": rid}))
        return err(404, 81044, "Record does not exist.")

    # ------------------------------------------------------------------ DNS

    def answer(self, wire: bytes) -> bytes:
        q = dns.message.from_wire(wire)
        resp = dns.message.make_response(q)
        resp.flags |= dns.flags.AA
        question = q.question[0]
        qname = question.name.to_text().rstrip(".").lower()
        zone = next((z for z in self.zones.values()
                     if qname == z["name"] or qname.endswith("." + z["name"])), None)
        if zone is None:
            resp.set_rcode(dns.rcode.REFUSED)
            return resp.to_wire()
        recs = [r for r in self.records[zone["id"]] if r["name"] == qname]
        if not recs:
            resp.set_rcode(dns.rcode.NXDOMAIN)
        want = dns.rdatatype.to_text(question.rdtype)
        match = [r for r in recs if r["type"] == want]
        if match:
            rrset = dns.rrset.from_text_list(question.name, 300, "IN", want,
                                             [presentation(r) for r in match])
            resp.answer.append(rrset)
        return resp.to_wire()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        app = web.Application(middlewares=[self._mw])
        app.router.add_get("/client/v4/zones", self.list_zones)
        app.router.add_get("/client/v4/zones/{zone}/dns_records", self.list_records)
        app.router.add_post("/client/v4/zones/{zone}/dns_records", self.create_record)
        app.router.add_delete("/client/v4/zones/{zone}/dns_records/{rid}",
                              self.delete_record)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        loop = asyncio.get_running_loop()
        fake = self

        class Proto(asyncio.DatagramProtocol):
            def connection_made(self, transport: Any) -> None:
                self.t = transport

            def datagram_received(self, data: bytes, addr: Any) -> None:
                try:
                    self.t.sendto(fake.answer(data), addr)
                except Exception:
                    pass

        self._transport, _ = await loop.create_datagram_endpoint(
            Proto, local_addr=("127.0.0.1", self.dns_port))

    async def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
        if self._runner is not None:
            await self._runner.cleanup()


