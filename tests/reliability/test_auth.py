"""Edit token and EditGuard: token sources, refusals, read-only, rate limit, no leaks."""

from __future__ import annotations

import os
import pickle
import threading

import pytest

from bitgen_core.auth import EditGuard, EditToken, load_edit_token
from bitgen_core.errors import AuthError

TOKEN = "correct-horse-battery-staple-42"


class FakeClock:
    """Injected monotonic clock: the guard's time moves only when the test says so."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def guard_with(token: str = TOKEN, **kwargs) -> EditGuard:
    return EditGuard(load_edit_token(environ={"BITGEN_EDIT_TOKEN": token}), **kwargs)


def refusal(guard: EditGuard, supplied) -> AuthError:
    with pytest.raises(AuthError) as info:
        guard.check(supplied)
    return info.value


def test_right_token_accepted_wrong_or_missing_refused():
    guard = guard_with(edits_per_minute=None)
    guard.check(TOKEN)
    guard.check(TOKEN + "\n")  # a trailing newline from `cat token` is not a different token
    assert refusal(guard, "x" + TOKEN[1:]).reason == "token_wrong"
    assert refusal(guard, TOKEN[:-1]).reason == "token_wrong"
    assert refusal(guard, TOKEN + "x").reason == "token_wrong"
    assert refusal(guard, "t\ud800ken").reason == "token_wrong"
    for missing in (None, "", "   ", 42):
        err = refusal(guard, missing)
        assert err.reason == "token_missing" and str(err).startswith("edit token missing")
    assert "edit token wrong" in str(refusal(guard, "nope-nope-nope"))
    assert guard.allowed(TOKEN) == (True, "")
    ok, msg = guard.allowed("bad")
    assert not ok and msg.startswith("edit token wrong")


def test_no_token_configured_refuses_unless_explicitly_allowed():
    closed = EditGuard(load_edit_token(environ={}))
    assert closed.token is None
    err = refusal(closed, "anything")
    assert err.reason == "no_token_configured" and "BITGEN_EDIT_TOKEN" in str(err)
    EditGuard(None, allow_unauthenticated=True).check(None)
    # a configured token is still required even when unauthenticated edits are allowed
    assert refusal(guard_with(allow_unauthenticated=True), None).reason == "token_missing"


def test_read_only_refuses_even_the_right_token_and_can_be_switched_live():
    guard = guard_with(read_only=True)
    err = refusal(guard, TOKEN)
    assert err.reason == "read_only" and str(err).startswith("memory is read-only")
    guard.read_only = False
    guard.check(TOKEN)


def test_rate_limit_refuses_past_the_limit_and_recovers_with_time():
    clock = FakeClock()
    guard = guard_with(edits_per_minute=6, burst=2, clock=clock)  # one slot per 10 s
    guard.check(TOKEN)
    guard.check(TOKEN)
    err = refusal(guard, TOKEN)
    assert err.reason == "rate_limited"
    assert str(err) == "rate limit: 6 edits/min exceeded, retry in 10.0 s"
    assert err.retry_after == pytest.approx(10.0)
    clock.t += 4.0
    assert refusal(guard, TOKEN).retry_after == pytest.approx(6.0)
    clock.t += 6.0
    guard.check(TOKEN)  # one slot refilled
    assert refusal(guard, TOKEN).reason == "rate_limited"
    clock.t += 3600.0
    guard.check(TOKEN)
    guard.check(TOKEN)  # the bucket refills to `burst`, not beyond
    assert refusal(guard, TOKEN).reason == "rate_limited"


def test_wrong_tokens_do_not_use_up_the_rate_budget():
    clock = FakeClock()
    guard = guard_with(edits_per_minute=1, burst=1, clock=clock)
    for _ in range(20):
        assert refusal(guard, "attacker-guess-000000").reason == "token_wrong"
    guard.check(TOKEN)


def test_rate_limit_is_exact_under_threads():
    guard = guard_with(edits_per_minute=1, burst=10, clock=FakeClock())
    results = []

    def edit():
        results.append(guard.allowed(TOKEN)[0])

    threads = [threading.Thread(target=edit) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(results) == 10


def test_token_file_permissions_are_checked(tmp_path):
    path = tmp_path / "edit.token"
    path.write_text(TOKEN + "\n")
    os.chmod(path, 0o644)
    with pytest.raises(AuthError, match=r"accessible by group/others \(mode 0644\); run: chmod "
                                        r"600"):
        load_edit_token(path)
    os.chmod(path, 0o640)
    with pytest.raises(AuthError, match="group/others"):
        load_edit_token(path)
    os.chmod(path, 0o600)
    token = load_edit_token(path)
    assert token.matches(TOKEN) and token.source == f"file:{path}"
    # via the environment variable as well
    assert load_edit_token(environ={"BITGEN_EDIT_TOKEN_FILE": str(path)}).matches(TOKEN)


def test_token_sources_fail_with_clear_messages(tmp_path):
    with pytest.raises(AuthError, match="cannot open edit token file"):
        load_edit_token(tmp_path / "missing")
    empty = tmp_path / "empty.token"
    empty.write_text("\n")
    os.chmod(empty, 0o600)
    with pytest.raises(AuthError, match="is empty"):
        load_edit_token(empty)
    with pytest.raises(AuthError, match="too short"):
        load_edit_token(environ={"BITGEN_EDIT_TOKEN": "abc"})
    with pytest.raises(AuthError, match="both BITGEN_EDIT_TOKEN and BITGEN_EDIT_TOKEN_FILE"):
        load_edit_token(environ={"BITGEN_EDIT_TOKEN": TOKEN, "BITGEN_EDIT_TOKEN_FILE": "/x"})
    with pytest.raises(AuthError, match="not a regular file"):
        load_edit_token(tmp_path)


def test_repr_str_and_pickle_do_not_leak_the_token():
    guard = guard_with()
    for shown in (repr(guard.token), str(guard.token), repr(guard), f"{guard.token}"):
        assert TOKEN not in shown
    assert "env:BITGEN_EDIT_TOKEN" in repr(guard.token)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(guard.token)
    with pytest.raises(AttributeError):
        guard.token.__dict__  # slots only: no generic attribute dump of the secret
    assert not isinstance(EditToken, str)
