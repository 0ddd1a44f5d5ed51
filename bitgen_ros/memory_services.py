"""The memory services' logic: a request in, RuntimeMemory's verdict out, in words.

`memory_edit`, `memory_forget` and `memory_list` answer in every lifecycle state and always
say why they did not act. Token, read-only, rate limit, key/fact limits and the audit record
are applied inside RuntimeMemory (the same rules as the `bitgen memory` CLI on the same
store); it never raises for a refused edit. No inference lock is taken: the memory has its
own, so an edit answers while a selection runs.
"""

from __future__ import annotations


def change_memory(runtime, node_state: str, action: str, key, token: str, fact: str | None,
                  log) -> tuple[bool, str, int]:
    """(success, message, fact count) of a write (`fact` given) or a forget."""
    if runtime is None:
        return False, f"memory unavailable: node is {node_state}, configure it first", 0
    result = (runtime.memory.write(key, fact, token=token) if action == "write"
              else runtime.memory.forget(key, token=token))
    shown = key[:64] if isinstance(key, str) else repr(key)
    if result.success:
        log.info(f"memory {action} {shown!r}: {result.message} ({result.count} facts)")
    else:
        log.warning(f"memory {action} {shown!r} refused: {result.message}")
    return result.success, result.message, result.count


def fill_memory_list(runtime, node_state: str, key_prefix: str, resp):
    """The MemoryList response: facts under `key_prefix`, oldest first."""
    if runtime is None:
        resp.success, resp.message = False, f"memory unavailable: node is {node_state}"
        return resp
    facts = sorted((f for f in runtime.memory.list() if f.key.startswith(key_prefix)),
                   key=lambda f: f.written_at)
    resp.success, resp.message = True, f"{len(facts)} fact(s)"
    resp.keys = [f.key for f in facts]
    resp.facts = [f.text for f in facts]
    resp.write_times = [float(f.written_at) for f in facts]
    return resp


def edit_policy(guard) -> str:
    """Who may change the memory, for the configure log line."""
    if guard is None:
        return "off"
    if guard.read_only:
        return "refused (read_only)"
    if guard.token is None:
        return "open to anyone (allow_unauthenticated_edits)" if guard.allow_unauthenticated \
            else "refused until an edit token is configured (BITGEN_EDIT_TOKEN[_FILE])"
    return f"need the edit token from {guard.token.source}"
