"""An investigation driven by the official MCP Python SDK (`pip install mcp`), as an AI agent
would run it against Periscope: list instances, find a function, read its source, place a
snapshot at a line, wait for the event, read the variables, remove the probe. Also checks that
malformed calls come back as tool errors that say what to do.

Usage: python3 mcp_investigate.py CONFIG_JSON
  CONFIG: {"transport": "stdio", "command": [...]} or {"transport": "http", "url", "token"},
          plus "pid" (the target's pid) and "line" (a line in ledger.rs after `total` is set).
Prints one JSON object with what it found; exits non-zero on any failed check.
"""

import asyncio
import json
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def field(obj, snake, camel):
    """The SDK's 2.x models use snake_case attributes, 1.x camelCase: accept either."""
    return getattr(obj, snake) if hasattr(obj, snake) else getattr(obj, camel)


class Result:
    """A tool result with the names this script uses."""

    def __init__(self, r):
        self.content = r.content
        self.isError = bool(field(r, "is_error", "isError"))
        self.structuredContent = field(r, "structured_content", "structuredContent")


def text_of(result):
    return " ".join(getattr(c, "text", "") for c in result.content)


async def call(session, name, args):
    return Result(await session.call_tool(name, args))


async def investigate(session, cfg):
    await session.initialize()
    tools = {t.name: t for t in (await session.list_tools()).tools}
    for name in ["list_instances", "find_functions", "find_message", "read_source", "add_log", "add_snapshot", "watch_failures",
                 "add_counter", "add_metric", "get_events", "wait_for_events", "list_probes", "remove_probe"]:
        check(name in tools, f"tool {name} listed")
        check(tools[name].description, f"tool {name} has a description")
    check("probe_id" in json.dumps(field(tools["wait_for_events"], "input_schema", "inputSchema")), "schema names probe_id")

    prompts = await session.list_prompts()
    check(any(p.name == "investigate" for p in prompts.prompts), "the investigate prompt is listed")
    walk = await session.get_prompt("investigate", {"symptom": "the fee looks wrong"})
    check("wait_for_events" in str(walk.messages) and "the fee looks wrong" in str(walk.messages),
          walk.messages)
    check("find_message" in str(walk.messages), walk.messages)

    r = await call(session, "list_instances", {})
    check(not r.isError, f"list_instances: {text_of(r)}")
    instances = r.structuredContent["instances"]
    mine = [i for i in instances if i["pid"] == cfg["pid"]]
    check(mine, f"instance with pid {cfg['pid']} in {instances}")
    inst = mine[0]
    check(inst["language"] == "rust", inst)

    r = await call(session, "find_functions", {"instance": inst["id"], "pattern": "settle"})
    check(not r.isError, text_of(r))
    funcs = r.structuredContent["functions"]
    settle = [f for f in funcs if f["name"] == "ledger::settle"]
    check(settle and settle[0]["file"].endswith("ledger.rs"), funcs)

    # From a message as someone saw it to the line that formats it.
    r = await call(session, "find_message", {"instance": inst["id"], "message": "owner-1"})
    check(not r.isError, text_of(r))
    found = r.structuredContent["matches"]
    check(found and found[0]["file"].endswith("ledger.rs") and "owner-{worker}" in found[0]["source"]
          and found[0]["exact"] is True, found)

    line = cfg["line"]
    r = await call(session, "read_source", {"instance": inst["id"], "file": "ledger.rs",
                                            "from_line": line - 2, "to_line": line + 2})
    check(not r.isError, text_of(r))
    src = r.structuredContent
    check(src["file"].endswith("ledger.rs"), src["file"])
    by_line = {l["line"]: l for l in src["lines"]}
    check(by_line[line]["instrumentable"] is True, by_line.get(line))
    check("ledger.push(total)" in by_line[line]["text"], by_line[line])

    r = await call(session, "add_snapshot", {"target": inst["id"], "location": f"ledger.rs:{line}"})
    check(not r.isError, text_of(r))
    probe = r.structuredContent["probe"]
    pid_ = probe["id"]
    check([s["state"] for s in probe["instances"]] == ["installed"], probe["instances"])

    r = await call(session, "wait_for_events", {"probe_id": pid_, "count": 1, "timeout_seconds": 60})
    check(not r.isError, text_of(r))
    events = r.structuredContent["events"]
    check(len(events) == 1, events)
    ev = events[0]
    check(ev["kind"] == "snapshot" and ev["instance"] == inst["id"], ev)
    top = ev["frames"][0]
    check(top["function"] == "ledger::settle", top)
    v = top["variables"]
    fee = v["fee"]["value"]
    total = v["total"]["value"]
    transfer = v["t"]["target"]["fields"]
    amount = transfer["amount_cents"]["value"]
    seq = transfer["seq"]["value"]
    worker = transfer["worker"]["value"]
    # What the target computed: amount = seq*100 + worker, fee = amount/10, total = amount + fee.
    check(amount == seq * 100 + worker, transfer)
    check(fee == amount // 10, (fee, amount))
    check(total == amount + fee, (total, amount, fee))
    check(transfer["from"]["fields"]["api_token"]["kind"] == "redacted", "secret redacted")

    r = await call(session, "get_events", {"probe_id": pid_, "limit": 5})
    check(not r.isError and r.structuredContent["events"][0]["seq"] == ev["seq"], text_of(r))

    r = await call(session, "list_probes", {})
    check(any(p["id"] == pid_ for p in r.structuredContent["probes"]), "listed")
    r = await call(session, "remove_probe", {"probe_id": pid_})
    check(not r.isError and r.structuredContent["probe"]["state"] == "removed", text_of(r))

    r = await call(session, "watch_failures", {"target": inst["id"], "duration_seconds": 60})
    check(not r.isError, text_of(r))
    armed = r.structuredContent["probe"]
    check(armed["kind"] == "failures" and armed["instances"][0]["state"] == "installed", armed)
    r = await call(session, "remove_probe", {"probe_id": armed["id"]})
    check(not r.isError, text_of(r))

    # Metrics: a duration of settle and a gauge of its total, grouped by memo, in the kernel.
    r = await call(session, "add_metric", {"target": inst["id"], "metric": "duration",
                                           "location": "ledger::settle", "by": "t.memo", "engine": "bpf"})
    check(not r.isError, text_of(r))
    timed = r.structuredContent["probe"]
    r = await call(session, "add_metric", {"target": inst["id"], "metric": "gauge",
                                           "location": f"ledger.rs:{line}", "value": "total"})
    check(not r.isError, text_of(r))
    sampled = r.structuredContent["probe"]
    for probe_, metric in [(timed, "duration"), (sampled, "gauge")]:
        r = await call(session, "wait_for_events", {"probe_id": probe_["id"], "count": 1, "timeout_seconds": 60})
        check(not r.isError, text_of(r))
        ev = r.structuredContent["events"][0]
        check(ev["kind"] == "metric" and ev["metric"] == metric and ev["count"] > 0, ev)
        check(ev["min"] <= ev["max"] and ev["engine"] == "bpf", ev)
        check(metric in text_of(r), text_of(r))
        if metric == "duration":
            check(sum(g["count"] for g in ev["groups"].values()) == ev["count"], ev)
            check(set(k.strip('"') for k in ev["groups"]) <= {"rent", "coffee", "books"}, ev["groups"])
        else:
            # Every total the ledger computes is amount + amount // 10, amount = seq*100 + worker.
            amount_ = (int(ev["last"]) * 10 + 10) // 11
            check(any(a + a // 10 == int(ev["last"]) and a % 100 < 2 for a in range(amount_ - 2, amount_ + 3)), ev)
        check(probe_["instances"][0].get("engine") == "bpf", probe_)
        r = await call(session, "remove_probe", {"probe_id": probe_["id"]})
        check(not r.isError, text_of(r))
    r = await call(session, "add_metric", {"target": inst["id"], "metric": "gauge", "location": f"ledger.rs:{line}"})
    check(r.isError and "value" in text_of(r), text_of(r))

    # Malformed calls: tool errors with a way forward, never a crash or a hang.
    errors = {}
    r = await call(session, "add_snapshot", {"target": inst["id"], "location": "ledger.rs:9999"})
    check(r.isError and "nearest lines with code" in text_of(r), text_of(r))
    errors["unresolved"] = text_of(r)
    r = await call(session, "wait_for_events", {"probe_id": pid_, "count": "many"})
    check(r.isError and "count" in text_of(r), text_of(r))
    errors["wrong_type"] = text_of(r)
    r = await call(session, "add_log", {"target": inst["id"], "location": f"ledger.rs:{line}"})
    check(r.isError and "template" in text_of(r), text_of(r))
    errors["missing_field"] = text_of(r)
    r = await call(session, "remove_probe", {"probe_id": "p424242"})
    check(r.isError and "list_probes" in text_of(r), text_of(r))
    errors["unknown_probe"] = text_of(r)
    r = await call(session, "add_log", {"target": "service=nowhere", "location": f"ledger.rs:{line}",
                                        "template": "x"})
    check(r.isError and "list_instances" in text_of(r), text_of(r))
    errors["no_instance"] = text_of(r)
    r = await call(session, "read_source", {"instance": "nope", "file": "ledger.rs"})
    check(r.isError and inst["id"] in text_of(r), text_of(r))
    errors["unknown_instance"] = text_of(r)
    r = await call(session, "add_log", {"target": inst["id"], "location": f"ledger.rs:{line}",
                                        "template": "x={nosuch}"})
    check(r.isError and "in scope" in text_of(r), text_of(r))

    return {"instance": inst["id"], "probe": pid_, "amount": amount, "fee": fee, "total": total,
            "errors": errors}


async def verify_candidates(session, cfg):
    """verify_fix with a right and a wrong candidate for the refunds sample's planted bug."""
    await session.initialize()
    r = await call(session, "list_instances", {})
    inst = [i for i in r.structuredContent["instances"] if i["pid"] == cfg["pid"]][0]
    r = await call(session, "verify_fix", {
        "target": inst["id"], "location": cfg["location"], "failure": cfg["failure"],
        "candidates": [{"name": "capped", "fix": cfg["capped"]}, {"name": "halved", "fix": cfg["halved"]}],
        "max_hits": 300, "timeout_seconds": 60,
    })
    check(not r.isError, text_of(r))
    check("capped: fixed" in text_of(r), text_of(r))
    # Replay mode: a copy of the process runs the fix; the outcome is read at UNTIL.
    r3 = await call(session, "verify_fix", {
        "target": inst["id"], "location": cfg["location"], "failure": cfg["replay_failure"],
        "candidates": [{"name": "capped", "fix": cfg["capped"]}], "keep": ["charge.refunded"],
        "replay": cfg["replay"], "rate": 1000, "max_hits": 150, "budget_ms": 5000, "timeout_seconds": 60,
    })
    check(not r3.isError, text_of(r3))
    r2 = await call(session, "verify_fix", {
        "target": inst["id"], "location": cfg["location"], "failure": cfg["failure"],
        "candidates": [{"name": "x", "fix": "refund = 1"}], "replay": "refunds.rs:25",
    })
    check(r2.isError and "FROM..UNTIL" in text_of(r2), text_of(r2))
    return {"verify": r.structuredContent, "replay": r3.structuredContent}


async def viewer_cannot_add(session, cfg):
    await session.initialize()
    r = await call(session, "list_instances", {})
    check(not r.isError, text_of(r))
    inst = [i for i in r.structuredContent["instances"] if i["pid"] == cfg["pid"]][0]
    r = await call(session, "add_snapshot", {"target": inst["id"], "location": f"ledger.rs:{cfg['line']}"})
    check(r.isError and "403" in text_of(r), text_of(r))
    return {"viewer_denied": text_of(r)}


async def main():
    cfg = json.loads(sys.argv[1])
    flow = viewer_cannot_add if cfg.get("viewer") else verify_candidates if cfg.get("failure") else investigate
    if cfg["transport"] == "stdio":
        cmd = cfg["command"]
        params = StdioServerParameters(command=cmd[0], args=cmd[1:], env=cfg.get("env"))
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                out = await flow(session, cfg)
    else:
        client = create_mcp_http_client(headers={"Authorization": f"Bearer {cfg['token']}"})
        async with client:
            async with streamable_http_client(cfg["url"], http_client=client) as streams:
                read, write = streams[0], streams[1]
                async with ClientSession(read, write) as session:
                    out = await flow(session, cfg)
    print(json.dumps(out))


asyncio.run(main())
