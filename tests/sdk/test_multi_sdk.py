"""`ai-proxy-multi` through the official OpenAI and Anthropic SDKs: a failing first instance is
never seen by the client (JSON and streams, converted or not), and a stream cut after its
first byte raises in the SDK without a second instance being asked."""

import anthropic
import openai


def multi(gateway, prefix="/multi"):
    return openai.OpenAI(base_url=f"{gateway.root_url}{prefix}/v1", api_key="client-key", max_retries=0)


def models_asked(gateway):
    bodies = [r.get("body") for r in gateway.upstream_requests()]
    return [b.get("model") for b in bodies if isinstance(b, dict)]


def test_openai_sdk_falls_back_unseen(gateway):
    r = multi(gateway).chat.completions.create(
        model="client-model", messages=[{"role": "user", "content": "What is 1+1?"}]
    )
    assert r.choices[0].message.content == "1+1 equals 2."
    assert r.model == "healthy-model"
    asked = models_asked(gateway)
    assert asked[-2:] == ["broken-model", "healthy-model"], asked


def test_openai_sdk_stream_falls_back_unseen(gateway):
    chunks = list(
        multi(gateway).chat.completions.create(
            model="client-model",
            stream=True,
            messages=[{"role": "user", "content": "What is 1+1?"}],
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "1+1 equals 2."
    assert {c.model for c in chunks} == {"healthy-model"}


def test_anthropic_sdk_falls_back_unseen(gateway):
    client = anthropic.Anthropic(base_url=f"{gateway.root_url}/multi", api_key="client-key", max_retries=0)
    m = client.messages.create(
        model="claude-client", max_tokens=64, messages=[{"role": "user", "content": "What is 1+1?"}]
    )
    assert m.content[0].text == "1+1 equals 2."
    with client.messages.stream(
        model="claude-client", max_tokens=64, messages=[{"role": "user", "content": "What is 1+1?"}]
    ) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "1+1 equals 2."
    assert final.stop_reason == "end_turn"


def test_a_stream_cut_after_its_first_byte_raises_and_is_not_retried(gateway):
    before = models_asked(gateway).count("spare-model")
    try:
        for _ in multi(gateway, "/multicut").chat.completions.create(
            model="client-model",
            stream=True,
            messages=[{"role": "user", "content": "hi"}],
        ):
            pass
    except openai.APIError as e:
        assert "upstream stream" in str(e), e
    else:
        raise AssertionError("a broken-off stream looked finished")
    client = anthropic.Anthropic(base_url=f"{gateway.root_url}/multicut", api_key="client-key", max_retries=0)
    try:
        with client.messages.stream(
            model="claude-client", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        ) as s:
            for _ in s.text_stream:
                pass
            s.get_final_message()
    except anthropic.APIError as e:
        assert "upstream stream" in str(e), e
    else:
        raise AssertionError("a broken-off stream looked finished")
    assert models_asked(gateway).count("spare-model") == before, "no second instance after the first byte"
