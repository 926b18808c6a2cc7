"""The official OpenAI Python SDK through Ferry to the mock provider."""

import openai
import pytest


def client(gateway):
    return openai.OpenAI(base_url=gateway.base_url, api_key="client-key-is-replaced", max_retries=0)


def test_chat(gateway):
    r = client(gateway).chat.completions.create(
        model="gpt-4", messages=[{"role": "user", "content": "What is 1+1?"}]
    )
    assert r.choices[0].message.content == "1+1 equals 2."
    assert r.model == "gpt-4"
    assert r.usage.total_tokens == 31


def test_stream_without_usage(gateway):
    chunks = list(
        client(gateway).chat.completions.create(
            model="gpt-4", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "1+1 equals 2."
    # Ferry asked the provider for usage on its own behalf; the client never sees that chunk.
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)


def test_stream_with_usage(gateway):
    chunks = list(
        client(gateway).chat.completions.create(
            model="gpt-4",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage.total_tokens == 21


def test_embeddings(gateway):
    r = client(gateway).embeddings.create(model="text-embedding-3-small", input="hello")
    assert r.data[0].embedding == [0.0123, -0.0456, 0.0789, 0.0012]
    assert r.usage.prompt_tokens == 7


def test_rate_limit_is_a_typed_error(gateway):
    with pytest.raises(openai.RateLimitError) as e:
        client(gateway).chat.completions.create(
            model="gpt-4",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-mock-status": "429"},
        )
    assert e.value.status_code == 429
    assert e.value.response.headers.get("retry-after") == "1"


def test_server_error_is_a_typed_error(gateway):
    with pytest.raises(openai.InternalServerError) as e:
        client(gateway).chat.completions.create(
            model="gpt-4",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-mock-status": "500"},
        )
    assert "mock error 500" in str(e.value)


def test_gateway_error_is_a_typed_error(gateway):
    with pytest.raises(openai.BadRequestError) as e:
        client(gateway).chat.completions.create(model="gpt-4", messages=[], extra_body={"stream": "yes"})
    assert "must be a boolean" in e.value.message
