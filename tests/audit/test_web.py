"""JSON bodies: the byte-level shortcut of decode_json_object never passes what the full check refuses."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from audit.web import ApiError, _shape_problem, decode_json_object

TEXT = st.one_of(st.text(max_size=4), st.sampled_from(["\x00", "a\x00", "\ud800", "x\udfff", "\\u", "{[", "é"]))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), TEXT)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(TEXT, inner, max_size=3)), max_leaves=12)


def outcome(call):
    try:
        return "ok", call()
    except ApiError as exc:
        return exc.code, exc.message


@settings(max_examples=400, deadline=None)
@given(body=st.dictionaries(TEXT, VALUES, max_size=4), ascii_only=st.booleans(),
       encoding=st.sampled_from(["utf-8", "utf-16", "utf-16-le", "utf-32"]), max_depth=st.integers(1, 9))
def test_the_shortcut_agrees_with_the_full_check(body, ascii_only, encoding, max_depth):
    raw = json.dumps(body, ensure_ascii=ascii_only).encode(encoding, "surrogatepass")
    problem = _shape_problem(json.loads(raw), max_depth)
    expected = ("ok", body) if problem is None else problem
    assert outcome(lambda: decode_json_object(raw, max_depth)) == expected


def test_a_key_repeated_in_one_object_is_refused_at_any_depth():
    for raw in (b'{"subject": "alice", "subject": "bob"}', b'{"context": {"a": 1, "b": 2, "a": 3}}',
                b'{"requests": [{"x": 1}, {"y": 1, "y": 1}]}'):
        code, message = outcome(lambda: decode_json_object(raw))
        assert code == "bad_json" and message.startswith("the body is ambiguous JSON: the key ") and \
            "appears more than once in one object" in message, raw
    assert outcome(lambda: decode_json_object(b'{"a": {"k": 1}, "b": {"k": 2}}')) == (
        "ok", {"a": {"k": 1}, "b": {"k": 2}})  # the same key in two objects is two keys
