"""Strategies for the string formats Periscope's OpenAPI document declares.

The API takes texts in its own syntax (expressions, log templates, locations, selectors, fixes,
replays): JSON Schema cannot describe them, so the document names a format for each and the
contract test generates valid ones from these samples. The server parses every such text and
answers 400 naming the field when one does not parse (tested elsewhere).
"""

import schemathesis
from hypothesis import strategies as st

schemathesis.openapi.format(
    "periscope-expression",
    st.sampled_from(["x", "total > 1000", "req.id == 3", "len(items) >= 2", 'user.name == "ann"', "a && !b"]),
)
schemathesis.openapi.format(
    "periscope-template",
    st.sampled_from(["id={req.id}", "total={total} user={user.name}", "plain text"]),
)
schemathesis.openapi.format(
    "periscope-location",
    st.sampled_from(["main.rs:10", "ledger::settle", "main.handle", "src/cart.rs:42"]),
)
schemathesis.openapi.format(
    "periscope-selector",
    st.sampled_from(["service=ledger", "service=ledger,env=prod", "vm-123-abc"]),
)
schemathesis.openapi.format(
    "periscope-fix",
    st.sampled_from(["capped: refund = min(refund, limit)", "zero: fee = 0", "halved: x = x / 2"]),
)
schemathesis.openapi.format(
    "periscope-replay",
    st.sampled_from(["refund..refunds.rs:25", "main.handle..main.go:120"]),
)


# Long polls (`wait`'s timeout_ms, `settle_ms`) may be asked to wait minutes, which is right for
# a client and useless for a contract run: each is capped at half a second here (and given
# that when absent) so the run's time goes to the examples, not to waiting.
LONG_POLLS = ("timeout_ms", "settle_ms")


@schemathesis.hook
def map_query(ctx, query):
    if query is None:
        return query
    for name in LONG_POLLS:
        if name in query and isinstance(query[name], int):
            query[name] = min(query[name], 500)
    path = ctx.operation.path
    if path.endswith("/wait") and "timeout_ms" not in query:
        query["timeout_ms"] = 500
    return query
