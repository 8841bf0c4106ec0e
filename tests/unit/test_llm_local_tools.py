"""The JSON answer format for local models whose chat template cannot show tools."""

from __future__ import annotations

import json

import pytest

from soma.llm.local_tools import AnswerReader, answer_schema, plain_messages, tool_messages
from soma.llm.types import ChatMessage, ToolCall, ToolSpec

WEATHER = ToolSpec(
    "get_weather",
    "Get the weather for a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def feed_all(pieces: list[str]) -> tuple[str, AnswerReader]:
    reader = AnswerReader()
    return "".join(reader.feed(p) for p in pieces), reader


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_answer_text_streams_decoded_whatever_the_piece_boundaries(size: int) -> None:
    answer = 'Line one\n"quoted" \\ tab\there, caf\u00e9, \U0001f600 done'
    raw = '{\n  "response": ' + json.dumps(answer) + "\n}"
    text, reader = feed_all([raw[i : i + size] for i in range(0, len(raw), size)])
    assert text == answer
    assert reader.tool_call() is None


def test_answer_text_comes_out_before_the_answer_ends() -> None:
    reader = AnswerReader()
    assert reader.feed('{"resp') == ""
    assert reader.feed('onse": "Par') == "Par"
    assert reader.feed("is") == "is"
    assert reader.feed('", "ignored": "x"}') == ""


def test_a_surrogate_pair_split_across_pieces_decodes_to_one_character() -> None:
    raw = '{"response": "' + json.dumps("\U0001f600")[1:-1] + '"}'
    assert "\\ud83d\\ude00" in raw
    cut = raw.index("\\ude00")
    text, _ = feed_all([raw[:cut], raw[cut:]])
    assert text == "\U0001f600"


def test_a_tool_call_is_read_at_the_end_with_its_arguments_as_json_text() -> None:
    text, reader = feed_all(
        ['{\n  "tool_call": {"name": "get_weather",', ' "arguments": {"city": "Paris"}}}']
    )
    assert text == ""
    assert reader.tool_call() == ("get_weather", '{"city": "Paris"}')


def test_a_tool_call_cut_short_is_no_call() -> None:
    _, reader = feed_all(['{"tool_call": {"name": "get_weather", "argum'])
    assert reader.tool_call() is None


def test_plain_messages_turn_results_into_user_turns_and_calls_into_the_json_format() -> None:
    messages = [
        ChatMessage("user", "Weather in Paris?"),
        ChatMessage("assistant", "", (ToolCall("c1", "get_weather", '{"city": "Paris"}'),)),
        ChatMessage("tool", "sunny", tool_call_id="c1", name="get_weather"),
    ]
    out = plain_messages(messages)
    assert out[0] == {"role": "user", "content": "Weather in Paris?"}
    assert out[1]["role"] == "assistant"
    assert json.loads(out[1]["content"]) == {
        "tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}
    }
    assert out[2] == {"role": "user", "content": "[result of get_weather]\nsunny"}


def test_tool_messages_list_the_tools_in_the_system_turn() -> None:
    with_system = tool_messages(
        [ChatMessage("system", "Be brief."), ChatMessage("user", "Hi")], [WEATHER]
    )
    assert len(with_system) == 2
    assert with_system[0]["content"].startswith("Be brief.\n\n")
    assert '"name": "get_weather"' in with_system[0]["content"]
    without = tool_messages([ChatMessage("user", "Hi")], [WEATHER])
    assert [m["role"] for m in without] == ["system", "user"]
    assert '"tool_call"' in without[0]["content"] and '"response"' in without[0]["content"]


def test_the_answer_schema_offers_text_or_one_call_per_tool() -> None:
    other = ToolSpec("get_time", "Current time")
    schema = answer_schema([WEATHER, other])
    options = schema["anyOf"]
    assert options[0]["properties"] == {"response": {"type": "string"}}
    calls = [o["properties"]["tool_call"]["properties"] for o in options[1:]]
    assert [c["name"] for c in calls] == [{"const": "get_weather"}, {"const": "get_time"}]
    assert calls[0]["arguments"] == dict(WEATHER.parameters)
    assert all(o["additionalProperties"] is False for o in options)
