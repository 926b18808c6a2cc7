"""The official Google GenAI SDK (google-genai), unmodified, with its base URL on a Ferry route
whose provider speaks OpenAI Chat (the mock): generate_content and generate_content_stream
with a system instruction and a function call, usage, and a typed error."""

import pytest
from google import genai
from google.genai import errors, types


def client(gateway, **headers):
    return genai.Client(
        api_key="client-key",
        http_options=types.HttpOptions(
            base_url=f"{gateway.root_url}/gemini", api_version="v1beta", headers=headers or None
        ),
    )


def last_upstream(gateway):
    return gateway.upstream_requests()[-1]


def test_generate_content(gateway):
    c = client(gateway)  # held: a dropped Client closes its connection pool
    r = c.models.generate_content(
        model="gemini-2.5-flash",
        contents="What is 1+1?",
        config=types.GenerateContentConfig(system_instruction="Be brief.", max_output_tokens=64),
    )
    assert r.text == "1+1 equals 2."
    assert r.candidates[0].finish_reason == types.FinishReason.STOP
    assert r.usage_metadata.prompt_token_count == 23
    assert r.usage_metadata.total_token_count == 31
    up = last_upstream(gateway)
    assert up["path"] == "/v1/chat/completions"
    assert up["body"]["model"] == "gemini-2.5-flash"
    assert up["body"]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert up["body"]["max_completion_tokens"] == 64
    assert up["headers"]["authorization"] == "Bearer token"
    assert not any(k.startswith("x-goog-") for k in up["headers"])


def test_generate_content_stream(gateway):
    c = client(gateway)
    chunks = list(
        c.models.generate_content_stream(
            model="gemini-2.5-flash",
            contents="What is 1+1?",
            config=types.GenerateContentConfig(system_instruction="Be brief."),
        )
    )
    assert "".join(c.text or "" for c in chunks) == "1+1 equals 2."
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata.total_token_count == 21
    assert sum(1 for c in chunks if c.candidates and c.candidates[0].finish_reason) == 1


WEATHER = types.Tool(
    function_declarations=[
        types.FunctionDeclaration(
            name="get_weather",
            description="The weather in a city",
            parameters=types.Schema(
                type="OBJECT", properties={"city": types.Schema(type="STRING")}, required=["city"]
            ),
        )
    ]
)


@pytest.mark.parametrize("stream", [False, True])
def test_function_call(gateway, stream):
    config = types.GenerateContentConfig(
        system_instruction="Use tools.",
        tools=[WEATHER],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    c = client(gateway, **{"x-mock-tool-call": "1"})
    if stream:
        chunks = list(c.models.generate_content_stream(model="gemini-2.5-flash", contents="Weather in Paris?", config=config))
        calls = [fc for ch in chunks for fc in (ch.function_calls or [])]
    else:
        calls = c.models.generate_content(model="gemini-2.5-flash", contents="Weather in Paris?", config=config).function_calls
    assert len(calls) == 1
    assert calls[0].name == "get_weather"
    assert calls[0].args == {"city": "Paris"}
    tool = last_upstream(gateway)["body"]["tools"][0]["function"]
    assert tool["name"] == "get_weather"
    assert tool["parameters"]["properties"]["city"]["type"] == "string"


def test_function_response_history(gateway):
    contents = [
        types.Content(role="user", parts=[types.Part(text="Weather in Paris?")]),
        types.Content(role="model", parts=[types.Part(function_call=types.FunctionCall(name="get_weather", args={"city": "Paris"}))]),
        types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(name="get_weather", response={"temp": 20}))]),
    ]
    c = client(gateway)
    r = c.models.generate_content(model="gemini-2.5-flash", contents=contents)
    assert r.text == "1+1 equals 2."
    msgs = last_upstream(gateway)["body"]["messages"]
    call_id = msgs[1]["tool_calls"][0]["id"]
    assert msgs[2] == {"role": "tool", "tool_call_id": call_id, "content": '{"temp":20}'}


def test_rate_limit_is_a_typed_error(gateway):
    c = client(gateway, **{"x-mock-status": "429"})
    with pytest.raises(errors.ClientError) as e:
        c.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert e.value.code == 429
    assert e.value.status == "RESOURCE_EXHAUSTED"
