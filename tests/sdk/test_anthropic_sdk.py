"""The official Anthropic Python SDK through Ferry to an OpenAI-compatible (mock) provider,
and the OpenAI SDK to an Anthropic (mock) provider: protocol conversion both ways."""

import anthropic
import openai

CAT_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


def claude(gateway):
    return anthropic.Anthropic(base_url=gateway.root_url, api_key="client-key", max_retries=0)


def test_messages_create(gateway):
    m = claude(gateway).messages.create(
        model="gpt-4o",
        max_tokens=100,
        system="You are a mathematician",
        messages=[{"role": "user", "content": "What is 1+1?"}],
    )
    assert m.content[0].type == "text"
    assert m.content[0].text == "1+1 equals 2."
    assert m.stop_reason == "end_turn"
    assert m.usage.input_tokens == 23 and m.usage.output_tokens == 8


def test_messages_stream(gateway):
    with claude(gateway).messages.stream(
        model="gpt-4o", max_tokens=100, messages=[{"role": "user", "content": "What is 1+1?"}]
    ) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "1+1 equals 2."
    assert final.usage.output_tokens == 6
    assert final.stop_reason == "end_turn"


def test_tools_tool_results_and_images(gateway):
    tools = [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    m = claude(gateway).messages.create(
        model="gpt-4o",
        max_tokens=100,
        tools=tools,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        extra_headers={"x-mock-tool-call": "1"},
    )
    assert m.stop_reason == "tool_use"
    use = [b for b in m.content if b.type == "tool_use"][0]
    assert use.name == "get_weather" and use.input == {"city": "Paris"}
    # Send the tool result back, with an image, as the SDK would.
    m2 = claude(gateway).messages.create(
        model="gpt-4o",
        max_tokens=100,
        tools=tools,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": use.id, "name": use.name, "input": use.input}]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 21C"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": CAT_PNG}},
                ],
            },
        ],
    )
    assert m2.content[0].text == "1+1 equals 2."
    sent = gateway.upstream_requests()[-1]["body"]
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["messages"][2]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert sent["messages"][3] == {"role": "tool", "tool_call_id": use.id, "content": "sunny, 21C"}
    assert sent["messages"][4]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")


def test_stream_with_tools(gateway):
    with claude(gateway).messages.stream(
        model="gpt-4o",
        max_tokens=100,
        tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
        messages=[{"role": "user", "content": "Weather?"}],
        extra_headers={"x-mock-tool-call": "1"},
    ) as s:
        final = s.get_final_message()
    use = [b for b in final.content if b.type == "tool_use"][0]
    assert use.input == {"city": "Paris"}
    assert final.stop_reason == "tool_use"


def test_upstream_error_is_a_typed_error(gateway):
    try:
        claude(gateway).messages.create(
            model="gpt-4o",
            max_tokens=10,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-mock-status": "429"},
        )
    except anthropic.RateLimitError as e:
        assert e.status_code == 429
    else:
        raise AssertionError("expected a RateLimitError")


def gpt_on_claude(gateway):
    return openai.OpenAI(base_url=f"{gateway.root_url}/anthropic/v1", api_key="client-key", max_retries=0)


def test_openai_sdk_on_anthropic(gateway):
    r = gpt_on_claude(gateway).chat.completions.create(
        model="ignored", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    )
    assert r.choices[0].message.content == "1+1 equals 2."
    assert r.usage.total_tokens == 18
    assert gateway.upstream_requests()[-1]["path"] == "/v1/messages"


def test_openai_sdk_stream_with_tools_on_anthropic(gateway):
    chunks = list(
        gpt_on_claude(gateway).chat.completions.create(
            model="ignored",
            messages=[{"role": "user", "content": "Weather?"}],
            tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-mock-tool-call": "1"},
        )
    )
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].function.name == "get_weather"
    assert "".join(tc.function.arguments or "" for tc in calls) == '{"city":"Paris"}'
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]
    assert chunks[-1].usage.completion_tokens == 8


BROKEN = {"x-mock-reset-after": "2", "x-mock-chunks": "6", "x-mock-chunk-delay-ms": "20"}


def test_a_stream_broken_off_upstream_raises_in_the_anthropic_sdk(gateway):
    """The provider resets mid-stream: the SDK must raise, never hand back a finished message."""
    try:
        with claude(gateway).messages.stream(
            model="gpt-4o",
            max_tokens=100,
            messages=[{"role": "user", "content": "What is 1+1?"}],
            extra_headers=BROKEN,
        ) as s:
            for _ in s.text_stream:
                pass
            s.get_final_message()
    except anthropic.APIError as e:
        assert "upstream stream" in str(e), e
    else:
        raise AssertionError("a broken-off stream looked finished")


def test_a_stream_broken_off_upstream_raises_in_the_openai_sdk(gateway):
    try:
        for _ in gpt_on_claude(gateway).chat.completions.create(
            model="ignored",
            stream=True,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers=BROKEN,
        ):
            pass
    except openai.APIError as e:
        assert "upstream stream" in str(e), e
    else:
        raise AssertionError("a broken-off stream looked finished")
